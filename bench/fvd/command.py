"""`sfv-bench fvd REAL FAKE`: FVD between two folders of videos, or a statistics file and a folder."""
from __future__ import annotations

import sys
from pathlib import Path

from sfv_core.errors import UserError
from sfv_core.values import parse_size

from .features import cached_stats, compute_stats
from .stats import FeatureStats, fvd_from_stats


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


def _clips(files: list[Path], num_frames: int | None, size):
    """Yield uint8 (T, H, W, 3) clips: the first ``num_frames`` frames, resized to ``size``."""
    from sfv_core.data.transforms import resize_frames
    from sfv_core.data.videoio import VideoDecodeError, read_video, video_info

    from .i3d import MIN_FRAMES

    need = max(num_frames or MIN_FRAMES, MIN_FRAMES)
    for f in files:
        try:
            n = video_info(f)[0]
            if n < need:
                raise UserError(f"{f}: {n} frames, fewer than the {need} needed "
                                f"(I3D needs >= {MIN_FRAMES}; lower --num-frames or drop the video)")
            clip = read_video(f, range(num_frames) if num_frames else None)
        except VideoDecodeError as e:
            raise UserError(f"cannot decode {e}") from None
        yield clip if size is None else resize_frames(clip, *size)


def cli_fvd(args) -> int:
    """`sfv-bench fvd REAL FAKE`: FVD between two folders, or a statistics .npz and a folder."""
    from .detectors import load_detector
    from .i3d import MIN_FRAMES

    size = parse_size(args.size)
    if args.num_frames is not None and args.num_frames < MIN_FRAMES:
        raise UserError(f"--num-frames must be >= {MIN_FRAMES} (I3D's minimum), got {args.num_frames}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    real_path, fake_path = Path(args.real), Path(args.fake)
    fake_files = _video_files(fake_path, "FAKE")
    if not real_path.exists():
        raise UserError(f"REAL not found: {real_path}")
    detector = load_detector(args.detector, device=args.device)
    protocol = {"num_frames": args.num_frames, "size": list(size) if size else None,
                "detector_input": "224x224 bilinear, 2x/255-1"}

    if real_path.is_file():
        real = FeatureStats.load(real_path)
        got = real.metadata.get("detector_sha256")
        if got and got != detector.sha256:
            raise UserError(f"{real_path} was computed with detector sha256 {got[:12]} "
                            f"({real.metadata.get('detector')}), not {detector.sha256[:12]}; use the same --detector")
        run_proto = real.metadata.get("protocol") or {}
        if "score_width" in run_proto:  # real statistics cached by `sfv-bench run`: adopt its clip geometry
            want_frames = run_proto["num_frames"]
            want_size = (run_proto["score_width"], run_proto["score_height"])
            if (args.num_frames not in (None, want_frames)) or (size not in (None, want_size)):
                raise UserError(f"{real_path} holds {want_frames}-frame clips at {want_size[0]}x{want_size[1]} "
                                f"({real.metadata.get('detector', '')}); match --num-frames/--size or drop them")
            args.num_frames, size = want_frames, want_size
        elif "protocol" in real.metadata and real.metadata["protocol"] != protocol:
            raise UserError(f"{real_path} was computed with {real.metadata['protocol']}, not {protocol}; "
                            f"match --num-frames/--size")
        print(f"real statistics: {real_path} (N={real.n})", file=sys.stderr)
    else:
        real_files = _video_files(real_path, "REAL")
        real, hit, cpath = cached_stats(
            real_files, protocol, detector,
            lambda: (compute_stats(detector, _clips(real_files, args.num_frames, size), batch_size=args.batch_size,
                                   progress="real videos", total=len(real_files)), {}))
        print(f"real statistics {'read from' if hit else 'written to'} cache: {cpath}", file=sys.stderr)

    fake = compute_stats(detector, _clips(fake_files, args.num_frames, size), batch_size=args.batch_size,
                         progress="fake videos", total=len(fake_files))
    if real.n < 2 or fake.n < 2:
        raise UserError(f"FVD needs at least 2 videos on each side (N_real={real.n}, N_fake={fake.n})")
    res = fvd_from_stats(real, fake, args.covariance)
    frames = f"frames {args.num_frames or 'all'}"
    geometry = f"at {size[0]}x{size[1]}" if size else "at native size"
    print(f"FVD = {res['fvd']:.2f}  (N_real={res['n_real']}, N_fake={res['n_fake']}, detector: {detector.label}, "
          f"covariance: {res['covariance']}, {frames} {geometry})")
    return 0
