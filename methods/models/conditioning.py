"""Conditioning and decoding shared by every SVD-family method (one place, matching diffusers 0.42).

For uint8 images (H, W, 3) of any size, a generation size (width, height) and one generator per sample:

0. Fitting (``fit_images``): an image of another size is stretched with PIL's Lanczos resize
   (``resize="stretch"``, diffusers' ``VaeImageProcessor.resize`` for PIL input) or cover-resized
   and centre-cropped (``"cover-center-crop"``). The CLIP embedding is computed from the image as
   given when stretching (the pipeline runs ``_encode_image`` before resizing), from the fitted
   image when cropping.
1. pixels x = uint8 / 255 (float32), NCHW.
2. CLIP embedding: 2x - 1, antialiased resize to 224x224 (separable Gaussian blur, sigma =
   max((size_in / 224 - 1) / 2, 0.001) per axis, odd kernel of int(max(4 sigma, 3)) taps,
   reflect padding; then bicubic with align_corners=True), back to [0, 1], (x - mean) / std with the
   stack's ``feature_extractor`` mean/std (what its normalisation does, bit for bit),
   ``image_encoder(...).image_embeds`` -> (B, 1, D). Done on the CPU in float32 like the pipeline.
3. VAE latent: (2x - 1) + noise_aug_strength * n, n ~ N(0, I) from each sample's generator (the
   FIRST draw of every generator); ``vae.encode(...).latent_dist.mode()`` -- NOT multiplied by the
   scaling factor -- repeated over the frames. A float16 VAE with ``force_upcast`` encodes in
   float32 (as the pipeline does).
4. added_time_ids = [fps - 1, motion_bucket_id, noise_aug_strength].
5. Decoding: latents / scaling_factor, the temporal decoder on chunks of ``decode_chunk_size``
   frames (``num_frames`` = chunk length), frames (x + 1) / 2 clamped to [0, 1], uint8 =
   round(255 x). Chunks never span two videos (diffusers' pipeline chunks the flattened batch, so
   for B > 1 with T not a multiple of the chunk its frames depend on the batch; for B = 1 the two
   are identical).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sfv_core.data.transforms import fit_images


@dataclass
class Condition:
    image_embeddings: torch.Tensor  # (B, 1, D)
    image_latents: torch.Tensor     # (B, T, 4, h, w)
    added_time_ids: torch.Tensor    # (B, 3)


def _blur_1d(x: torch.Tensor, sigma: float, dim: int) -> torch.Tensor:
    """Normalised Gaussian filter along the last (dim=-1) or second-to-last (dim=-2) axis."""
    size = int(max(2.0 * 2 * sigma, 3))
    size += 1 - size % 2  # odd
    s = torch.tensor([[sigma]], dtype=x.dtype)
    taps = torch.arange(size, dtype=x.dtype) - size // 2
    w = torch.exp(-taps.expand(1, -1).pow(2.0) / (2 * s.pow(2.0)))
    w = w / w.sum(-1, keepdim=True)
    c = x.shape[1]
    half = (size - 1) // 2
    if dim == -1:
        kernel, pad = w[:, None, None, :], (half, size - 1 - half, 0, 0)
    else:
        kernel, pad = w[:, None, :, None], (0, 0, half, size - 1 - half)
    kernel = kernel.expand(-1, c, -1, -1).reshape(c, 1, *kernel.shape[-2:]).to(x.device)
    return F.conv2d(F.pad(x, pad, mode="reflect"), kernel, groups=c)


def resize_antialiased(x: torch.Tensor, size=(224, 224)) -> torch.Tensor:
    """SVD's CLIP resize of NCHW float images: Gaussian pre-blur, then bicubic (align_corners=True)."""
    h, w = x.shape[-2:]
    sig_h = max((h / size[0] - 1.0) / 2.0, 0.001)
    sig_w = max((w / size[1] - 1.0) / 2.0, 0.001)
    x = _blur_1d(_blur_1d(x, sig_w, -1), sig_h, -2)
    return F.interpolate(x, size=size, mode="bicubic", align_corners=True)


def images_to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [0, 1] on the CPU.

    A permuted view (channels-last strides), like diffusers' ``numpy_to_pt``: the memory layout
    selects the convolution kernels, so keeping it keeps the results bit-identical.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (B, H, W, 3), got {images.dtype} {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(images)).float().div(255.0).permute(0, 3, 1, 2)


def clip_preprocess(pixels: torch.Tensor, mean, std, size: int = 224) -> torch.Tensor:
    """[0, 1] NCHW pixels -> CLIP input: antialiased resize to size x size, then (x - mean) / std.

    Bit-identical to the pipeline's ``feature_extractor(do_normalize=True, do_resize=False, ...)``
    (checked in the tests), so no image processor is called."""
    x = (resize_antialiased(pixels * 2.0 - 1.0, (size, size)) + 1.0) / 2.0
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


@torch.no_grad()
def clip_embeddings(image_encoder, pixels: torch.Tensor, device, mean, std) -> torch.Tensor:
    """CLIP image embedding (B, 1, D) of [0, 1] pixels, as the pipeline computes it."""
    x = clip_preprocess(pixels, mean, std, image_encoder.config.image_size)
    x = x.to(device=device, dtype=next(image_encoder.parameters()).dtype)
    return image_encoder(x).image_embeds.unsqueeze(1)


@torch.no_grad()
def encode_condition(pipe, images, generators, device, *, num_frames: int, fps: int, motion_bucket_id: int,
                     noise_aug_strength: float, width: int | None = None, height: int | None = None,
                     resize: str = "stretch") -> Condition:
    """Image embedding, noise-augmented image latent and added time ids (conditional batch only)."""
    from diffusers.utils.torch_utils import randn_tensor

    expected = pipe.unet.add_embedding.linear_1.in_features
    if pipe.unet.config.addition_time_embed_dim * 3 != expected:
        raise ValueError(f"UNet expects {expected} added-time features, not 3 x "
                         f"{pipe.unet.config.addition_time_embed_dim}: wrong UNet config")
    clip_src, fitted = fit_images(images, width, height, resize)
    fe = pipe.feature_extractor
    if len({c.shape for c in clip_src}) == 1:
        emb = clip_embeddings(pipe.image_encoder, images_to_float(np.stack(clip_src)), device, fe.image_mean,
                              fe.image_std)
    else:
        emb = torch.cat([clip_embeddings(pipe.image_encoder, images_to_float(c[None]), device, fe.image_mean,
                                         fe.image_std) for c in clip_src])
    pixels = images_to_float(fitted)
    x = (2.0 * pixels - 1.0).to(device)
    noise = randn_tensor(x.shape, generator=generators, device=device, dtype=x.dtype)
    x = x + noise_aug_strength * noise
    vae = pipe.vae
    upcast = vae.dtype == torch.float16 and vae.config.force_upcast
    if upcast:
        vae.to(dtype=torch.float32)
    try:
        lat = vae.encode(x.to(device=device, dtype=vae.dtype)).latent_dist.mode()
    finally:
        if upcast:
            vae.to(dtype=torch.float16)
    lat = lat.to(emb.dtype).unsqueeze(1).repeat(1, num_frames, 1, 1, 1)
    ids = torch.tensor([[fps - 1, motion_bucket_id, noise_aug_strength]], dtype=emb.dtype)
    ids = ids.repeat(len(fitted), 1).to(device)
    return Condition(emb, lat, ids)


def frame_guidance(min_scale: float, max_scale: float, batch: int, num_frames: int, device, dtype):
    """Per-frame CFG scale (B, T, 1, 1, 1), linear from min (first frame) to max (last frame)."""
    g = torch.linspace(min_scale, max_scale, num_frames).unsqueeze(0).to(device, dtype)
    return g.repeat(batch, 1)[:, :, None, None, None]


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, decode_chunk_size: int, keep: int | None = None,
                   videos: int = 1) -> torch.Tensor:
    """Latents (B, T, 4, h, w) -> frames (B, keep, 3, H, W) float32 in [-1, 1] (unclamped).

    Each video is decoded in chunks of ``decode_chunk_size`` frames (the temporal decoder sees one chunk
    at a time, as in diffusers). ``videos`` > 1 decodes the same chunk of that many videos in one call
    (GenerationConditions.decode_videos; the decoder treats them as separate videos: equal up to float
    rounding, and much faster for small latents, where one video per call is mostly call overhead).
    With ``keep`` < T only the chunks holding frames 0..keep-1 are decoded (chunks are independent, so
    the kept frames equal those of a full decode).
    """
    keep = latents.shape[1] if keep is None else keep
    z_all = 1 / vae.config.scaling_factor * latents.to(vae.dtype)      # as diffusers writes it (bit for bit)
    per_call = max(1, int(videos))
    out = []
    for v in range(0, z_all.shape[0], per_call):
        z = z_all[v:v + per_call]
        chunks = []
        for i in range(0, keep, decode_chunk_size):
            c = z[:, i:i + decode_chunk_size]
            b, n = c.shape[:2]
            x = vae.decode(c.reshape(b * n, *c.shape[2:]), num_frames=n).sample
            chunks.append(x.reshape(b, n, *x.shape[1:]))
        out.append(torch.cat(chunks, dim=1)[:, :keep].float())
    return torch.cat(out)


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """Frames (B, T, 3, H, W) in [-1, 1] -> uint8 (B, T, H, W, 3): round(255 clamp((x + 1) / 2, 0, 1))."""
    x = (frames.float() * 0.5 + 0.5).clamp(0, 1)
    return (x * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()
