"""Generator side: the SVD UNet under EDM preconditioning (paper eq. 6), EMA, UNet builders.

x0_hat(x_t; sigma, c) = c_skip x_t + c_out F(c_in x_t ++ cond_latents; 0.25 ln sigma, clip, added_time_ids)
where ``++`` concatenates the conditioning-image VAE latent (repeated over frames) on channels,
exactly as the SVD pipeline builds the UNet input (FACTS sec. 2). With one step from sigma = 700,
x0_hat is the generated latent (what diffusers' Euler step with v-prediction returns).
"""
from __future__ import annotations

import torch

from .noise import edm_scalings

TINY_UNET_CONFIG = dict(
    sample_size=8, in_channels=8, out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    block_out_channels=(32, 64), layers_per_block=2, num_attention_heads=(2, 4),
    cross_attention_dim=32, addition_time_embed_dim=32, projection_class_embeddings_input_dim=96,
    transformer_layers_per_block=1, num_frames=14)


def tiny_unet(seed: int = 0):
    """The tiny SVD UNet of FACTS sec. 2 (random init), for tests and the CPU benchmark."""
    from diffusers import UNetSpatioTemporalConditionModel
    torch.manual_seed(seed)
    return UNetSpatioTemporalConditionModel(**TINY_UNET_CONFIG)


def full_unet(device=None, dtype=torch.float32):
    """The real SVD UNet architecture (diffusers' defaults = SVD config, 1.525 B parameters), random weights."""
    from diffusers import UNetSpatioTemporalConditionModel
    with torch.device(device or "cpu"):
        return UNetSpatioTemporalConditionModel().to(dtype)


def denoise(unet, x_t, sigma, cond_latents, image_embeds, added_time_ids):
    """EDM denoiser D(x_t; sigma) for latents (b, t, 4, h, w), sigma (b,) (any float dtype)."""
    b, t = x_t.shape[:2]
    sigma = sigma.to(device=x_t.device, dtype=torch.float32)
    c_skip, c_out, c_in, c_noise = (s.view(b, 1, 1, 1, 1) for s in edm_scalings(sigma))
    inp = torch.cat([c_in * x_t, cond_latents[:, None].expand(-1, t, -1, -1, -1).to(x_t.dtype)], dim=2)
    out = unet(inp, c_noise.view(b), image_embeds, added_time_ids, return_dict=False)[0]
    return c_skip * x_t + c_out * out.to(x_t.dtype)


@torch.no_grad()
def ema_update(ema, model, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter (buffers copied)."""
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach().to(pe.dtype), 1 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)
