"""The library API: FVD of two sets of videos, and one video from one image, each in one call.

    from bench import compute_fvd, generate_video
    compute_fvd(real_videos, fake_videos, "stylegan-v")["fvd"]
    video = generate_video(PIL.Image.open("frame.png"), "svd:25", "svd", device="cuda")

Pixel values: uint8 is taken as 0..255. Float input (numpy or torch, any float dtype) must lie in
[-1, 1]: if any value of one input (an array, a tensor, or all float clips of one list together) is
negative, the input is read as [-1, 1], otherwise as [0, 1]; values outside [-1, 1] are refused.
Layout: the channel axis (size 3) is last, or else third from last ((T, 3, H, W), (3, H, W)).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from sfv_core.errors import UserError

log = logging.getLogger(__name__)

SVD_NATIVE_SIZE = (1024, 576)   # StableVideoDiffusionPipeline's default width x height
VIDEOS = ("a (B, T, H, W, 3) or (B, T, 3, H, W) numpy array or torch tensor (uint8, or float in [0, 1] or "
          "[-1, 1]), a list of (T, H, W, 3) / (T, 3, H, W) clips, or a folder of videos")
IMAGE = ("a PIL image, an image file path, or a numpy array / torch tensor (H, W, 3) or (3, H, W) (uint8, or "
         "float in [0, 1] or [-1, 1])")


def _describe(x) -> str:
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"
    if isinstance(x, (list, tuple)):
        return f"a {type(x).__name__} of {len(x)} item(s)" + (f", the first {_describe(x[0])}" if x else "")
    return f"{type(x).__name__} {str(x)[:60]!r}" if isinstance(x, (str, os.PathLike)) else type(x).__name__


def _numpy(x):
    """A numpy array of ``x`` (torch tensors: detached, on the CPU, floats as float32), or None."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "numpy"):
        x = x.detach().cpu()
        return (x.float() if x.is_floating_point() else x).numpy()
    return None


def _signed(arrays) -> bool:
    """The value rule: True ([-1, 1]) if any value of the float arrays is negative."""
    return any(a.dtype.kind == "f" and a.size and np.nanmin(a) < 0 for a in arrays)


def _to_uint8(a: np.ndarray, signed: bool, what: str, accepted: str) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind != "f":
        raise UserError(f"{what}: expected {accepted}; got {_describe(a)}")
    if a.size == 0 or not np.isfinite(a).all():
        raise UserError(f"{what}: {'no values' if a.size == 0 else 'NaN or inf values'} ({_describe(a)})")
    lo, hi = float(a.min()), float(a.max())
    if lo < -1 or hi > 1:
        raise UserError(f"{what}: float values must lie in [0, 1] or [-1, 1], got {lo:.4g}..{hi:.4g} "
                        f"(pass uint8 for 0..255)")
    a = (a.astype(np.float32) + 1) / 2 if signed else a.astype(np.float32)
    return np.clip(np.round(a * 255), 0, 255).astype(np.uint8)


def _channels_last(a: np.ndarray):
    """The array with its size-3 channel axis last (last, else third from last), or None."""
    if a.ndim >= 3 and a.shape[-1] == 3:
        return a
    if a.ndim >= 3 and a.shape[-3] == 3:
        return np.moveaxis(a, -3, -1)
    return None


# ---------------------------------------------------------------------------------------- FVD

def _detector(detector, device):
    from sfv_fvd.detectors import Detector, load_detector

    if isinstance(detector, Detector):
        return detector
    if isinstance(detector, (str, os.PathLike)):
        return load_detector(str(detector), device=device)
    raise UserError(f"detector: expected 'toy', 'stylegan-v', 'tats', a weight file path or a loaded Detector; "
                    f"got {_describe(detector)}")


def _real_stats(real):
    """The real side's FeatureStats when it is a statistics file or object, else None."""
    from sfv_fvd.stats import FeatureStats

    if isinstance(real, FeatureStats):
        return real
    if isinstance(real, (str, os.PathLike)) and Path(real).is_file() and str(real).endswith(".npz"):
        return FeatureStats.load(real)
    return None


def _clip_list(x, what: str, frames: int | None):
    """uint8 (T, H, W, 3) clips of an array, a tensor or a list of clips; None if ``x`` is none of them."""
    whole = _numpy(x)
    if whole is not None:
        arrays = [_channels_last(whole)]
        if arrays[0] is None or arrays[0].ndim != 5:
            return None
    elif isinstance(x, (list, tuple)) and x:
        arrays = [None if (a := _numpy(i)) is None else _channels_last(a) for i in x]
        if any(a is None or a.ndim not in (4, 5) for a in arrays):
            return None
    else:
        return None
    signed, clips = _signed(arrays), []
    for a in arrays:
        u = _to_uint8(a, signed, what, VIDEOS)
        clips.extend(u if u.ndim == 5 else [u])
    if frames is not None:
        short = [c.shape[0] for c in clips if c.shape[0] < frames]
        if short:
            raise UserError(f"{what}: {len(short)} clip(s) have {min(short)} frames, fewer than num_frames={frames}")
        clips = [c[:frames] for c in clips]
    return clips


def _videos(x, what: str, frames: int | None, fps: int, consecutive: bool, size):
    """The clips of one side (a list, or a generator for a folder), or a one-line UserError."""
    from sfv_core.protocol import GEN
    from sfv_fvd.i3d import MIN_FRAMES

    from .fvd_command import _clips, _video_files

    clips = _clip_list(x, what, frames)
    if clips is not None:
        if size is not None:
            from sfv_core.data.transforms import resize_frames
            clips = [resize_frames(c, *size) for c in clips]
        short = sorted({c.shape[0] for c in clips if c.shape[0] < MIN_FRAMES})
        if short:
            raise UserError(f"{what}: clips of {short[0]} frames; I3D needs at least {MIN_FRAMES} per clip")
        return clips
    if isinstance(x, (str, os.PathLike)) and Path(x).is_dir():
        frames = frames or GEN.num_frames
        if frames < MIN_FRAMES:
            raise UserError(f"num_frames must be >= {MIN_FRAMES} (I3D's minimum), got {frames}")
        return _clips(_video_files(Path(x), what), frames, fps, consecutive, size)
    stats = " (statistics are accepted for the real side only)" if what == "fake" else ""
    extra = "" if stats else ", or a statistics .npz / FeatureStats"
    missing = " (no such folder)" if isinstance(x, (str, os.PathLike)) and not Path(x).exists() else ""
    raise UserError(f"{what}: expected {VIDEOS}{extra}; got {_describe(x)}{missing}{stats}")


def compute_fvd(real, fake, detector, *, covariance: str = "biased", batch_size: int = 8, device="cpu",
                num_frames: int | None = None) -> dict:
    """FVD between two sets of videos: {'fvd', 'n_real', 'n_fake', 'covariance', 'detector' (its label)}.

    ``real`` / ``fake``: a (B, T, H, W, 3) or (B, T, 3, H, W) numpy array or torch tensor, uint8 or
    float in [0, 1] / [-1, 1] (any negative value: [-1, 1]); a list of (T, ...) clips; a folder of
    videos, read by `sfv-bench fvd`'s clip rule (``num_frames``, default 14, at 7 fps from frame 0);
    or, for ``real`` only, a statistics .npz or FeatureStats (its clip rule then applies to ``fake``).
    Arrays are used as given, or cut to their first ``num_frames`` frames when it is set.
    ``detector``: 'toy' (not comparable with published FVD), 'stylegan-v', 'tats', a path or a Detector.
    """
    from sfv_core.protocol import GEN
    from sfv_fvd.features import compute_stats
    from sfv_fvd.stats import fvd_from_stats

    if covariance not in ("biased", "unbiased"):
        raise UserError(f"covariance must be 'biased' (1/N) or 'unbiased' (1/(N-1)), got {covariance!r}")
    if int(batch_size) < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    real_stats = _real_stats(real)
    proto = (real_stats.metadata.get("protocol") or {}) if real_stats is not None else {}
    if num_frames and proto.get("num_frames") not in (None, num_frames):
        raise UserError(f"the real statistics hold {proto['num_frames']}-frame clips, not num_frames={num_frames}")
    frames = num_frames or proto.get("num_frames")
    consecutive = "fps" in proto and proto["fps"] is None
    fps = proto.get("fps") or GEN.fps
    size = ((proto["score_width"], proto["score_height"]) if "score_width" in proto
            else tuple(proto["size"]) if proto.get("size") else None)
    real_clips = None if real_stats is not None else _videos(real, "real", frames, fps, consecutive, size)
    fake_clips = _videos(fake, "fake", frames, fps, consecutive, size)
    det = _detector(detector, device)
    got = real_stats.metadata.get("detector_sha256") if real_stats is not None else None
    if got and got != det.sha256:
        raise UserError(f"real statistics were computed with detector sha256 {got[:12]} "
                        f"({real_stats.metadata.get('detector')}), not {det.sha256[:12]}; pass that detector")
    if real_stats is None:
        real_stats = compute_stats(det, real_clips, batch_size=int(batch_size))
    fake_stats = compute_stats(det, fake_clips, batch_size=int(batch_size))
    if real_stats.n < 2 or fake_stats.n < 2:
        raise UserError(f"FVD needs at least 2 videos on each side (N_real={real_stats.n}, N_fake={fake_stats.n})")
    res = fvd_from_stats(real_stats, fake_stats, covariance)
    return {"fvd": res["fvd"], "n_real": res["n_real"], "n_fake": res["n_fake"], "covariance": covariance,
            "detector": det.label}


# ----------------------------------------------------------------------------------- generation

def _image(image) -> np.ndarray:
    """uint8 (H, W, 3) of a PIL image, an image file or a numpy / torch image, or a one-line UserError."""
    if isinstance(image, (str, os.PathLike)):
        from PIL import Image, UnidentifiedImageError
        try:
            with Image.open(image) as im:
                return np.asarray(im.convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise UserError(f"image: cannot read {image} as an image ({e})") from None
    if type(image).__module__.startswith("PIL."):
        return np.asarray(image.convert("RGB"))
    a = _numpy(image)
    if a is not None and a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    c = _channels_last(a) if a is not None and a.ndim == 3 else None
    if c is None:
        raise UserError(f"image: expected {IMAGE}; got {_describe(image)}")
    return np.ascontiguousarray(_to_uint8(c, _signed([c]), "image", IMAGE))


def native_size(method, stack) -> tuple[int, int] | None:
    """Width x height a loaded method generates at by default: 1024x576 for the SVD releases (the
    pipeline's defaults), else the UNet's sample_size x the VAE factor (tiny: 64x64); None without a pipeline."""
    from methods.models.stacks import STACK_REPOS

    pipe = getattr(method, "pipe", None)
    if pipe is None:
        return None
    if str(stack) in STACK_REPOS or str(stack) in STACK_REPOS.values():
        return SVD_NATIVE_SIZE
    s = pipe.unet.config.sample_size
    h, w = (s, s) if isinstance(s, int) else s
    return w * pipe.vae_scale_factor, h * pipe.vae_scale_factor


def generate_video(image, method: str = "svd:25", stack="svd", *, seed: int = 0, device=None, dtype=None,
                   width: int | None = None, height: int | None = None, num_frames: int = 14, **options):
    """One video, uint8 (T, H, W, 3), from one image with ``method`` on ``stack`` ('svd', 'svd-xt', 'tiny', a folder).

    ``image``: see IMAGE (float: any negative value means [-1, 1]). Size: ``width`` x ``height``, else the
    stack's native size (see ``native_size``); an image of another size is stretched (a logged warning: on
    stderr unless the application configures logging otherwise).
    ``options``: the method's options (`sfv-bench ls`). Loads the stack on every call: for many videos use
    ``get_method(spec).load(stack, device, dtype)`` and ``.generate(images, seeds, ...)``.
    """
    from methods.registry import get_method
    from sfv_core.env import resolve_device

    img = _image(image)
    if (width is None) != (height is None):
        raise UserError(f"give both width and height, or neither (the stack's native size); got {width}x{height}")
    if int(num_frames) < 1:
        raise UserError(f"num_frames must be >= 1, got {num_frames}")
    dev = resolve_device(device, "device")
    m = get_method(method, **options)
    m.load(stack, dev, dtype or ("float16" if dev.startswith("cuda") else "float32"))
    try:
        size = (int(width), int(height)) if width is not None else native_size(m, stack)
        size = size or (img.shape[1], img.shape[0])
        scale = getattr(getattr(m, "pipe", None), "vae_scale_factor", 1)
        if size[0] % scale or size[1] % scale or min(size) < 1:
            raise UserError(f"width and height must be positive multiples of {scale} (the VAE's factor), "
                            f"got {size[0]}x{size[1]}")
        if size != (img.shape[1], img.shape[0]):
            log.warning(f"stretching {img.shape[1]}x{img.shape[0]} -> {size[0]}x{size[1]} (the pipeline's rule)")
        return m.generate(img[None], [int(seed)], num_frames=int(num_frames), width=size[0], height=size[1])[0]
    finally:
        m.unload()
