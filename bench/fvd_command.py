"""`sfv-bench fvd REAL FAKE`: FVD between two folders of videos, or a statistics file and a folder. Its console:
the result is the one line on stdout (``FVD = ...``, for scripts); notes and warnings go to stderr."""
from __future__ import annotations

import sys
from pathlib import Path

from sfv_core.errors import UserError
from sfv_core.values import parse_size
from sfv_fvd.features import cached_stats, compute_stats
from sfv_fvd.stats import FeatureStats, fvd_from_stats


def _video_files(folder: Path, role: str) -> list[Path]:
    from sfv_core.data.videoio import list_videos
    if not folder.exists():
        raise UserError(f"{role} folder not found: {folder}")
    if not folder.is_dir():
        raise UserError(f"{role} must be a folder of videos: {folder}")
    files = list_videos(folder)
    if not files:
        raise UserError(f"{role} folder has no videos (avi/mp4/mkv/mov/webm/npy/npz): {folder}")
    return files


def _clip_rule(num_frames: int, fps: int, consecutive: bool) -> str:
    if consecutive:
        return f"the first {num_frames} consecutive frames"
    return (f"{num_frames} frames at {fps} fps from frame 0 (index_k = round(k * src_fps / {fps}), src_fps from "
            f"each container; .npy/.npz arrays are taken as {fps} fps)")


def _counts(lengths: set) -> str:
    v = sorted(lengths)
    return str(v[0]) if len(v) == 1 else f"{v[0]}..{v[-1]}"


def _clips(files: list[Path], num_frames: int, fps: int, consecutive: bool, size, lengths: set | None = None):
    """Yield uint8 (T, H, W, 3) clips by the protocol's frame rule (or consecutive frames), resized to ``size``;
    the source frame counts go into ``lengths``."""
    from sfv_core.data.clips import clip_indices, frames_needed
    from sfv_core.data.transforms import resize_frames
    from sfv_core.data.videoio import VideoDecodeError, read_video, video_info

    for f in files:
        try:
            n, src_fps = video_info(f)[:2]
            if lengths is not None:
                lengths.add(n)
            if consecutive or not src_fps > 0:
                idx = list(range(num_frames)) if n >= num_frames else None
                need = num_frames
            else:
                idx = clip_indices(n, src_fps, num_frames, fps)
                need = frames_needed(src_fps, num_frames, fps)
            if idx is None:
                raise UserError(f"{f}: {n} frames, the clip needs {need} ({_clip_rule(num_frames, fps, consecutive)}); "
                                f"lower --num-frames or drop the video")
            clip = read_video(f, idx)
        except VideoDecodeError as e:
            raise UserError(f"cannot decode {e}") from None
        yield clip if size is None else resize_frames(clip, *size)


def cli_fvd(args) -> int:
    """`sfv-bench fvd REAL FAKE`: FVD between two folders, or a statistics .npz and a folder."""
    from sfv_fvd.detectors import load_detector
    from sfv_fvd.i3d import MIN_FRAMES

    size = parse_size(args.size)
    if args.num_frames < MIN_FRAMES:
        raise UserError(f"--num-frames must be >= {MIN_FRAMES} (I3D's minimum), got {args.num_frames}")
    if args.fps < 1:
        raise UserError(f"--fps must be >= 1, got {args.fps}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    real_path, fake_path = Path(args.real), Path(args.fake)
    real_lengths: set = set()
    fake_files = _video_files(fake_path, "FAKE")
    if not real_path.exists():
        raise UserError(f"REAL not found: {real_path}")
    spec = args.detector
    if spec is None:
        meta = FeatureStats.load(real_path).metadata if real_path.is_file() else {}
        spec = meta.get("detector_spec")
        if spec is None:
            raise UserError("choose the detector: --detector toy (random-init, not comparable with published FVD), "
                            "stylegan-v, tats or a weight file")
    detector = load_detector(spec, device=args.device, trust=getattr(args, "trust_detector", False))
    protocol = {"num_frames": args.num_frames, "fps": None if args.consecutive else args.fps,
                "size": list(size) if size else None, "detector_input": "224x224 bilinear, 2x/255-1"}

    if real_path.is_file():
        real = FeatureStats.load(real_path)
        got = real.metadata.get("detector_sha256")
        if got and got != detector.sha256:
            raise UserError(f"{real_path} was computed with detector sha256 {got[:12]} "
                            f"({real.metadata.get('detector')}), not {detector.sha256[:12]}; use the same --detector")
        run_proto = real.metadata.get("protocol") or {}
        if "score_width" in run_proto:  # real statistics cached by `sfv-bench run`: adopt its clip geometry
            want = (run_proto["num_frames"], run_proto["fps"], (run_proto["score_width"], run_proto["score_height"]))
            if (args.num_frames, args.fps) != want[:2] or args.consecutive or size not in (None, want[2]):
                raise UserError(f"{real_path} holds {want[0]}-frame clips at {want[1]} fps, {want[2][0]}x{want[2][1]} "
                                f"({real.metadata.get('detector', '')}); use --num-frames {want[0]} --fps {want[1]} "
                                f"without --consecutive, and --size {want[2][0]}x{want[2][1]} or none")
            size = want[2]
        elif "protocol" in real.metadata and real.metadata["protocol"] != protocol:
            raise UserError(f"{real_path} was computed with {real.metadata['protocol']}, not {protocol}; "
                            f"match --num-frames/--size")
        print(f"real statistics: {real_path} (N={real.n})", file=sys.stderr)
    else:
        real_files = _video_files(real_path, "REAL")
        real, hit, cpath = cached_stats(
            real_files, protocol, detector,
            lambda: (compute_stats(detector, _clips(real_files, args.num_frames, args.fps, args.consecutive, size,
                                                    real_lengths),
                                   batch_size=args.batch_size, progress="real videos", total=len(real_files)), {}))
        print(f"real statistics {'read from' if hit else 'written to'} cache: {cpath}", file=sys.stderr)

    fake_lengths: set = set()
    fake = compute_stats(detector, _clips(fake_files, args.num_frames, args.fps, args.consecutive, size, fake_lengths),
                         batch_size=args.batch_size, progress="fake videos", total=len(fake_files))
    if real.n < 2 or fake.n < 2:
        raise UserError(f"FVD needs at least 2 videos on each side (N_real={real.n}, N_fake={fake.n})")
    if real_lengths and fake_lengths and real_lengths != fake_lengths:
        print(f"warning: the real videos have {_counts(real_lengths)} frames, the fake ones {_counts(fake_lengths)}; "
              f"both were cut by the same rule ({_clip_rule(args.num_frames, args.fps, args.consecutive)}): check "
              f"that the two sides were made alike", file=sys.stderr)
    res = fvd_from_stats(real, fake, args.covariance)
    frames = f"{args.num_frames} frames" + (" (consecutive)" if args.consecutive else f" at {args.fps} fps")
    geometry = f"at {size[0]}x{size[1]}" if size else "at native size"
    print(f"FVD = {res['fvd']:.2f}  (N_real={res['n_real']}, N_fake={res['n_fake']}, detector: {detector.label}, "
          f"covariance: {res['covariance']}, {frames} {geometry}; clips: "
          f"{_clip_rule(args.num_frames, args.fps, args.consecutive)})")
    return 0
