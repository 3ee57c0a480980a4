"""Frame geometry used by the protocol (the written rules: docs/protocol.md).

All functions take and return uint8 frames shaped (T, H, W, 3) (numpy or torch) and resize with
torch's ``F.interpolate`` (bilinear, align_corners=False, antialias when shrinking), rounding
back to uint8. torchvision is deliberately not used.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _as_tensor(frames) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if t.dtype != torch.uint8 or t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {tuple(t.shape)} {t.dtype}")
    return t


def _like(t: torch.Tensor, ref):
    return t.numpy() if isinstance(ref, np.ndarray) else t


def resize_float(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bilinear resize of float (N, C, H, W); antialiased when shrinking."""
    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x
    shrink = height < h or width < w
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)


def resize_frames(frames, width: int, height: int):
    """Resize uint8 (T, H, W, 3) frames to width x height (aspect not kept)."""
    t = _as_tensor(frames)
    if tuple(t.shape[1:3]) == (height, width):
        return frames
    x = t.permute(0, 3, 1, 2).float()
    y = resize_float(x, width, height).round_().clamp_(0, 255).to(torch.uint8)
    return _like(y.permute(0, 2, 3, 1).contiguous(), frames)


def center_crop_to_aspect(frames, width: int, height: int):
    """Largest centred crop of (T, H, W, 3) frames whose aspect is width:height."""
    t = _as_tensor(frames)
    h, w = t.shape[1:3]
    if w * height > h * width:           # too wide: crop columns
        cw, ch = round(h * width / height), h
    else:                                # too tall: crop rows
        cw, ch = w, round(w * height / width)
    top, left = (h - ch) // 2, (w - cw) // 2
    return _like(t[:, top:top + ch, left:left + cw].contiguous(), frames)


def resize_cover_crop(frames, width: int, height: int):
    """Scale so the frame covers width x height (scale = max(W/w, H/h)), then centre-crop.

    320x240 -> 1024x576: scaled to 1024x768, rows 96..671 kept.
    """
    t = _as_tensor(frames)
    h, w = t.shape[1:3]
    scale = max(width / w, height / h)
    sw, sh = max(width, round(w * scale)), max(height, round(h * scale))
    scaled = _as_tensor(resize_frames(t, sw, sh))
    top, left = (sh - height) // 2, (sw - width) // 2
    return _like(scaled[:, top:top + height, left:left + width].contiguous(), frames)


def fit_images(images, width: int | None, height: int | None, resize: str = "stretch"):
    """Bring a list or batch of uint8 (H, W, 3) images to width x height (default: their common size).

    Returns (the images CLIP sees, uint8 (B, height, width, 3)): ``resize="stretch"`` uses PIL's
    Lanczos resize (diffusers' ``VaeImageProcessor.resize`` for PIL input) and leaves CLIP the image
    as given; ``"cover-center-crop"`` cover-resizes and centre-crops and gives CLIP the crop."""
    from PIL import Image

    images = [np.asarray(im) for im in images]
    for im in images:
        if im.dtype != np.uint8 or im.ndim != 3 or im.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (H, W, 3) each, got {im.dtype} {im.shape}")
    if width is None or height is None:
        sizes = {im.shape[:2] for im in images}
        if len(sizes) > 1:
            raise ValueError(f"images of different sizes {sorted(sizes)}: give the generation width and height")
        height, width = next(iter(sizes))
    fitted, clip_src = [], []
    for im in images:
        if im.shape[:2] == (height, width):
            out = im
        elif resize == "stretch":
            out = np.asarray(Image.fromarray(im).resize((width, height), resample=Image.Resampling.LANCZOS))
        elif resize == "cover-center-crop":
            out = _as_tensor(resize_cover_crop(im[None], width, height)).numpy()[0]
        else:
            raise ValueError(f"resize must be stretch or cover-center-crop, got {resize!r}")
        fitted.append(out)
        clip_src.append(im if resize == "stretch" else out)
    return clip_src, np.stack(fitted)
