"""Reading and writing videos: containers (read with decord or PyAV, written with PyAV) and lossless
uint8 arrays (``.npy`` / ``.npz``) shaped (T, H, W, 3). Every write is atomic.

Reading backend: decord where it imports, PyAV otherwise (decord has no macOS arm64 wheels);
``SFV_VIDEO_BACKEND=decord|pyav`` forces one, read at every call. Both give the same uint8 frames
and the same (num_frames, fps, width, height): both decode with FFmpeg and convert to RGB with
swscale's bilinear default; frames = the stream's packets, fps = its avg_frame_rate (the tests
check equality on mpeg4 AVI/MP4 and the synthetic dataset). One difference: decord applies a
rotation tag (phone videos), PyAV does not; UCF-101 has none. PyAV is imported where a container is
read with it or written, so arrays (and everything that never touches a container) need no PyAV.
"""
from __future__ import annotations

import functools
import io
import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..fsutil import atomic_path, atomic_write_bytes

BACKEND_ENV = "SFV_VIDEO_BACKEND"
BACKENDS = ("decord", "pyav")

CONTAINER_EXTS = (".avi", ".mp4", ".mkv", ".mov", ".webm")
ARRAY_EXTS = (".npy", ".npz")
VIDEO_EXTS = CONTAINER_EXTS + ARRAY_EXTS


class VideoDecodeError(Exception):
    """A file that exists but cannot be decoded as a video."""


def list_videos(folder) -> list[Path]:
    """All video files below ``folder`` (recursive), sorted by relative path."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTS
                  and not p.name.startswith("."))


def _load_array(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path) as z:
                key = "video" if "video" in z.files else z.files[0]
                arr = z[key]
        else:
            arr = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any failure means "cannot decode"
        raise VideoDecodeError(f"{path}: {e}") from e
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise VideoDecodeError(f"{path}: expected uint8 array (T, H, W, 3), got {arr.shape} {arr.dtype}")
    return arr


def backend() -> str:
    """The container reader in use: ``$SFV_VIDEO_BACKEND`` (decord | pyav) if set, else decord where
    it imports, else pyav. Read at every call, so tests and users can switch it at run time."""
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if forced not in ("", *BACKENDS):
        raise UserError(f"{BACKEND_ENV}={forced!r} is not a video backend: use decord or pyav (or unset it)")
    if forced == "decord" and not _have_decord():
        raise UserError(f"{BACKEND_ENV}=decord but decord does not import here: pip install decord, "
                        f"or set {BACKEND_ENV}=pyav")
    return forced or ("decord" if _have_decord() else "pyav")


@functools.lru_cache(maxsize=1)
def _have_decord() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def _why(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def video_info(path) -> tuple[int, float, int, int]:
    """(num_frames, fps, width, height); fps is 0.0 for arrays (unknown)."""
    path = Path(path)
    if path.suffix.lower() in ARRAY_EXTS:
        arr = _load_array(path)
        return arr.shape[0], 0.0, arr.shape[2], arr.shape[1]
    if backend() == "pyav":
        return _pyav_info(path)
    vr = _reader(path)
    try:
        h, w = vr[0].shape[:2]
    except Exception as e:  # noqa: BLE001 - decord raises its own DECORDError and RuntimeError
        raise VideoDecodeError(f"{path}: {_why(e)}") from e
    return len(vr), float(vr.get_avg_fps()), w, h


def _reader(path: Path):
    import decord
    try:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        if len(vr) == 0:
            raise VideoDecodeError(f"{path}: no frames")
        return vr
    except VideoDecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - decord raises its own DECORDError and RuntimeError
        raise VideoDecodeError(f"{path}: {_why(e)}") from e


def _check_indices(path: Path, idx: list[int], n: int) -> None:
    if idx and (min(idx) < 0 or max(idx) >= n):
        raise VideoDecodeError(f"{path}: frame index out of range (video has {n} frames)")


def read_video(path, indices=None) -> np.ndarray:
    """Decode a video to uint8 (T, H, W, 3); ``indices`` selects frames (default: all)."""
    path = Path(path)
    if path.suffix.lower() in ARRAY_EXTS:
        arr = _load_array(path)
        return arr if indices is None else arr[list(indices)]
    if backend() == "pyav":
        return _pyav_read(path, indices)
    vr = _reader(path)
    idx = list(range(len(vr))) if indices is None else [int(i) for i in indices]
    _check_indices(path, idx, len(vr))
    try:
        return vr.get_batch(idx).asnumpy()
    except Exception as e:  # noqa: BLE001
        raise VideoDecodeError(f"{path}: {e}") from e


def _pyav_scan(path: Path, wanted, last: int) -> tuple[int, float, dict]:
    """One pass over the file as decord sees it: (frames = the stream's packets, fps = avg_frame_rate,
    {index: RGB frame} for the ``wanted`` indices, or all when None). Decoding stops after frame
    ``last``; the remaining packets are only counted."""
    import av

    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise VideoDecodeError(f"{path}: no video stream")
            stream = c.streams.video[0]
            n, decoded, frames = 0, 0, {}
            for packet in c.demux(stream):
                n += packet.pts is not None or packet.dts is not None  # not the final flush packet
                if last is not None and decoded > last:
                    continue
                for f in packet.decode():
                    if wanted is None or decoded in wanted:
                        frames[decoded] = f.to_ndarray(format="rgb24")
                    decoded += 1
            rate = stream.average_rate
    except VideoDecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - av.error.* (FileNotFoundError, InvalidDataError, ...)
        raise VideoDecodeError(f"{path}: {_why(e)}") from e
    if n == 0 or decoded == 0:
        raise VideoDecodeError(f"{path}: no frames")
    return n, float(rate) if rate else 0.0, frames


def _pyav_info(path: Path) -> tuple[int, float, int, int]:
    n, fps, frames = _pyav_scan(path, {0}, 0)
    h, w = frames[0].shape[:2]
    return n, fps, w, h


def _pyav_read(path: Path, indices) -> np.ndarray:
    idx = None if indices is None else [int(i) for i in indices]
    wanted = None if idx is None else set(idx) | {0}  # frame 0 gives the size of an empty selection
    n, _, frames = _pyav_scan(path, wanted, None if idx is None else max([0, *idx]))
    idx = list(range(n)) if idx is None else idx
    _check_indices(path, idx, n)
    missing = [i for i in idx if i not in frames]
    if missing:
        raise VideoDecodeError(f"{path}: frame {missing[0]} did not decode ({len(frames)} of {n} frames did)")
    return np.stack([frames[i] for i in idx]) if idx else np.zeros((0, *frames[0].shape), np.uint8)


def save_array(path, frames: np.ndarray, compress: bool = True) -> None:
    """Lossless, atomic: ``.npz`` (compressed, key 'video') or ``.npy``."""
    frames = np.ascontiguousarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 (T, H, W, 3), got {frames.shape} {frames.dtype}")
    buf = io.BytesIO()
    if str(path).endswith(".npz"):
        (np.savez_compressed if compress else np.savez)(buf, video=frames)
    else:
        np.save(buf, frames, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def write_video(path, frames: np.ndarray, fps: float, codec: str | None = None,
                bit_rate: int = 4_000_000) -> None:
    """Write uint8 (T, H, W, 3) frames to a container, atomically.

    Default codec: ``mpeg4`` (Xvid-like, as UCF-101's AVIs) for .avi, ``mpeg4`` for
    .mp4, lossless ``ffv1`` for .mkv. ``bit_rate`` applies to mpeg4.
    """
    import av

    path = Path(path)
    ext = path.suffix.lower()
    codec = codec or ("ffv1" if ext == ".mkv" else "mpeg4")
    frames = np.ascontiguousarray(frames)
    t, h, w, _ = frames.shape
    with atomic_path(path, suffix=ext) as tmp:
        with av.open(str(tmp), "w") as c:
            s = c.add_stream(codec, rate=int(round(fps)))
            s.width, s.height = w, h
            s.pix_fmt = "bgr0" if codec == "ffv1" else "yuv420p"
            if codec == "mpeg4":
                s.bit_rate = bit_rate
            for f in frames:
                for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)


def gif_bytes(frames, fps: float) -> bytes:
    """An animated GIF (looping) of uint8 (T, H, W, 3) frames: one fast-octree palette per frame (~5x faster
    than PIL's default adaptive palette, mean error ~1% of the range); PIL merges identical consecutive
    frames into one longer frame."""
    from PIL import Image

    pictures = [Image.fromarray(np.asarray(f)).quantize(256, method=Image.Quantize.FASTOCTREE) for f in frames]
    buf = io.BytesIO()
    pictures[0].save(buf, format="GIF", save_all=True, append_images=pictures[1:],
                     duration=max(1, round(1000 / max(fps, 1e-3))), loop=0)
    return buf.getvalue()
