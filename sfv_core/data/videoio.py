"""Reading and writing videos: containers through decord (read) and PyAV (write), and lossless
uint8 arrays (``.npy`` / ``.npz``) shaped (T, H, W, 3). Every write is atomic."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..fsutil import atomic_path, atomic_write_bytes

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


def video_info(path) -> tuple[int, float, int, int]:
    """(num_frames, fps, width, height); fps is 0.0 for arrays (unknown)."""
    path = Path(path)
    if path.suffix.lower() in ARRAY_EXTS:
        arr = _load_array(path)
        return arr.shape[0], 0.0, arr.shape[2], arr.shape[1]
    vr = _reader(path)
    h, w = vr[0].shape[:2]
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
        raise VideoDecodeError(f"{path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


def read_video(path, indices=None) -> np.ndarray:
    """Decode a video to uint8 (T, H, W, 3); ``indices`` selects frames (default: all)."""
    path = Path(path)
    if path.suffix.lower() in ARRAY_EXTS:
        arr = _load_array(path)
        return arr if indices is None else arr[list(indices)]
    vr = _reader(path)
    idx = list(range(len(vr))) if indices is None else [int(i) for i in indices]
    if idx and (min(idx) < 0 or max(idx) >= len(vr)):
        raise VideoDecodeError(f"{path}: frame index out of range (video has {len(vr)} frames)")
    try:
        return vr.get_batch(idx).asnumpy()
    except Exception as e:  # noqa: BLE001
        raise VideoDecodeError(f"{path}: {e}") from e


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
