"""Discriminator of SF-V (paper sec. 3.2-3.3, docs/reference.md#discriminator).

Backbone: a FROZEN copy of the pretrained UNet encoder -- ``conv_in``, the time embedding
(``time_proj`` + ``time_embedding``), the added-time embedding (``add_time_proj`` +
``add_embedding``) and every down block -- run exactly as ``UNetSpatioTemporalConditionModel.forward``
runs them; it returns each down block's output features, shaped (b*t, c, h, w).

Heads (trainable): after every block a spatial head on (b*t, c, h, w) and a temporal head on
(b*h*w, c, t). A head is StyleGAN-T's DiscHead made 2-D (spatial) or 1-D over time (temporal):
spectral-norm 1x1 conv -> local batch norm -> LeakyReLU(0.2), a residual block of the same with a
3-wide kernel, then a spectral-norm 1x1 conv to ``cmap_dim`` channels that is projected
(Miyato & Koyama) on an embedding of the condition: the CLIP image embedding, c_noise(sigma') =
0.25 ln sigma' and the frame index (sinusoidal features). Each head outputs one logit per
position: spatial (b*t, h*w), temporal (b*h*w, t); :func:`per_sample` regroups them by video.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from .config import D_NORM_CHOICES, HEAD_CHOICES
ENCODER_MODULES = ("conv_in", "time_proj", "time_embedding", "add_time_proj", "add_embedding", "down_blocks")


class UNetEncoder(nn.Module):
    """Frozen copy of the UNet's encoder; ``forward`` returns the list of down-block outputs."""

    def __init__(self, unet):
        super().__init__()
        for name in ENCODER_MODULES:
            setattr(self, name, copy.deepcopy(getattr(unet, name)))
        self.block_channels = tuple(unet.config.block_out_channels)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # stays in eval mode: it is frozen
        return super().train(False)

    def enable_gradient_checkpointing(self) -> None:
        """diffusers' own checkpointing switch on the copied blocks (non-reentrant, double-backward safe)."""
        def fn(module, *args):
            return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)
        for m in self.modules():
            if hasattr(m, "gradient_checkpointing"):
                m._gradient_checkpointing_func = fn
                m.gradient_checkpointing = True

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids) -> list[torch.Tensor]:
        """``sample`` (b, t, 8, h, w), ``timestep`` c_noise per video (b,) or scalar."""
        batch_size, num_frames = sample.shape[:2]
        timesteps = torch.as_tensor(timestep, device=sample.device)
        if timesteps.ndim == 0:
            timesteps = timesteps[None]
        timesteps = timesteps.expand(batch_size)
        t_emb = self.time_proj(timesteps).to(dtype=sample.dtype)
        emb = self.time_embedding(t_emb)
        time_embeds = self.add_time_proj(added_time_ids.flatten()).reshape((batch_size, -1)).to(emb.dtype)
        emb = emb + self.add_embedding(time_embeds)
        sample = sample.flatten(0, 1)
        emb = emb.repeat_interleave(num_frames, dim=0)
        encoder_hidden_states = encoder_hidden_states.repeat_interleave(num_frames, dim=0)
        sample = self.conv_in(sample)
        indicator = torch.zeros(batch_size, num_frames, dtype=sample.dtype, device=sample.device)
        feats = []
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                sample, _ = block(hidden_states=sample, temb=emb, encoder_hidden_states=encoder_hidden_states,
                                  image_only_indicator=indicator)
            else:
                sample, _ = block(hidden_states=sample, temb=emb, image_only_indicator=indicator)
            feats.append(sample)
        return feats


class BatchNormLocal(nn.Module):
    """Batch norm over groups of at most ``virtual_bs`` samples (StyleGAN-T), batch statistics always.

    ``videos=None``: a sample is a row of the input (a frame for spatial heads, a spatial position for
    temporal ones), so a group is 8 consecutive frames or positions, mostly of one video (``--d-norm
    frames``, the default; a group spans two videos where the frame count is not a multiple). ``videos=b``:
    the rows are b videos' (video-major) and a group is all rows of up to 8 whole videos
    (``--d-norm videos``). ``none``: no normalisation (the affine part only)."""

    def __init__(self, channels: int, virtual_bs: int = 8, eps: float = 1e-5, mode: str = "frames"):
        super().__init__()
        self.virtual_bs, self.eps, self.mode = virtual_bs, eps, mode
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x, videos: int | None = None):
        n = x.shape[0]
        shape = x.shape
        view = [1, -1] + [1] * (len(shape) - 2)
        if self.mode == "none":
            return x * self.weight.view(view).to(x.dtype) + self.bias.view(view).to(x.dtype)
        unit = n // videos if self.mode == "videos" and videos else 1       # rows per sample
        m = n // unit
        g = next(k for k in range(min(self.virtual_bs, m), 0, -1) if m % k == 0) * unit  # rows per group
        xf = (x if x.dtype == torch.float64 else x.float()).reshape(n // g, g, *shape[1:])
        dims = [1] + list(range(3, xf.ndim))
        mean = xf.mean(dim=dims, keepdim=True)
        var = xf.var(dim=dims, keepdim=True, unbiased=False)
        xf = (xf - mean) * torch.rsqrt(var + self.eps)
        return (xf.reshape(shape) * self.weight.view(view) + self.bias.view(view)).to(x.dtype)


def _conv(dim: int, cin: int, cout: int, k: int) -> nn.Module:
    conv = (nn.Conv2d if dim == 2 else nn.Conv1d)(cin, cout, k, padding=k // 2)
    return spectral_norm(conv)


class _Block(nn.Module):
    def __init__(self, dim: int, channels: int, k: int, norm: str = "frames"):
        super().__init__()
        self.conv, self.norm = _conv(dim, channels, channels, k), BatchNormLocal(channels, mode=norm)

    def forward(self, x, videos=None):
        return F.leaky_relu(self.norm(self.conv(x), videos), 0.2)


class DiscHead(nn.Module):
    """Projection discriminator head over features (N, C, H, W) (dim=2) or (N, C, T) (dim=1)."""

    def __init__(self, dim: int, channels: int, cond_dim: int, cmap_dim: int = 64, norm: str = "frames"):
        super().__init__()
        self.dim, self.cmap_dim = dim, cmap_dim
        self.block1 = _Block(dim, channels, 1, norm)
        self.block2 = _Block(dim, channels, 3, norm)
        self.cls = _conv(dim, channels, cmap_dim, 1)
        self.cmapper = nn.Linear(cond_dim, cmap_dim)

    def forward(self, x, cond, videos=None):
        """``cond``: (N, cond_dim) for spatial heads, (N, T, cond_dim) for temporal ones; ``videos``: how
        many videos the N rows hold (the normalisation groups of ``--d-norm videos``)."""
        h = self.block1(x, videos)
        h = (h + self.block2(h, videos)) / math.sqrt(2)
        out = self.cls(h)                                           # (N, cmap, ...)
        cmap = self.cmapper(cond.to(out.dtype))
        if self.dim == 2:
            cmap = cmap[:, :, None, None]
        else:
            cmap = cmap.transpose(1, 2)                             # (N, cmap, T)
        return (out * cmap).sum(1).flatten(1) / math.sqrt(self.cmap_dim)


def interleave(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """a0 c0 a1 c1 ... along the batch dimension (real and fake videos in one call of ``--d-norm videos``)."""
    return torch.stack([a, c], 1).flatten(0, 1)


def fourier(x: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of a float tensor (..., ) -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    args = x.float()[..., None] * freqs     # float32 features (the condition is not differentiated)
    return torch.cat([args.cos(), args.sin()], dim=-1)


class Discriminator(nn.Module):
    """Frozen encoder + spatial/temporal heads after every down block. Only ``heads`` train."""

    def __init__(self, unet, heads: str = "both", cmap_dim: int = 64, embed_dim: int = 64, norm: str = "frames"):
        super().__init__()
        if heads not in HEAD_CHOICES:
            raise ValueError(f"heads must be one of {HEAD_CHOICES} (got {heads!r})")
        if norm not in D_NORM_CHOICES:
            raise ValueError(f"norm must be one of {D_NORM_CHOICES} (got {norm!r})")
        self.norm = norm
        self.backbone = UNetEncoder(unet)
        self.embed_dim = embed_dim
        cond_dim = unet.config.cross_attention_dim + 2 * embed_dim
        chans = self.backbone.block_channels
        self.use_spatial, self.use_temporal = heads in ("both", "spatial"), heads in ("both", "temporal")
        self.spatial = nn.ModuleList([DiscHead(2, c, cond_dim, cmap_dim, norm) for c in chans]
                                     if self.use_spatial else [])
        self.temporal = nn.ModuleList([DiscHead(1, c, cond_dim, cmap_dim, norm) for c in chans]
                                      if self.use_temporal else [])

    @property
    def head_kinds(self) -> list[str]:
        """'spatial' / 'temporal' for each entry of ``forward``'s list, in its order."""
        per_block = ["spatial"] * self.use_spatial + ["temporal"] * self.use_temporal
        return per_block * len(self.backbone.block_channels)

    def head_parameters(self):
        return [p for m in (self.spatial, self.temporal) for p in m.parameters()]

    def train_heads(self, on: bool) -> None:
        """Heads get gradients (D phase) or not (G phase)."""
        for p in self.head_parameters():
            p.requires_grad_(on)

    def head_state_dict(self) -> dict:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    def load_head_state_dict(self, sd: dict) -> None:
        missing, unexpected = self.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.startswith("backbone.")]
        if missing or unexpected:
            raise ValueError(f"head state mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")

    def condition(self, image_embeds, c_noise, num_frames: int) -> torch.Tensor:
        """(b, t, cond_dim): [CLIP embedding, fourier(c_noise(sigma')), fourier(frame index)]."""
        b = image_embeds.shape[0]
        img = image_embeds.reshape(b, 1, -1).float().expand(b, num_frames, -1)
        noise = fourier(c_noise.reshape(b) * 1000.0 / 4.0, self.embed_dim)[:, None].expand(b, num_frames, -1)
        frames = fourier(torch.arange(num_frames, device=image_embeds.device), self.embed_dim)
        return torch.cat([img, noise, frames[None].expand(b, -1, -1)], dim=-1)

    def forward(self, x_in, c_noise, cond_latents, image_embeds, added_time_ids) -> list[torch.Tensor]:
        """Logits of every head. ``x_in`` = c_in(sigma') x'_t, (b, t, 4, h, w); ``cond_latents``
        (b, 4, h, w) is repeated over frames and concatenated on channels, as in the SVD pipeline.

        Returns a list of per-head logits shaped (b, positions)."""
        b, t = x_in.shape[:2]
        sample = torch.cat([x_in, cond_latents[:, None].expand(-1, t, -1, -1, -1).to(x_in.dtype)], dim=2)
        feats = self.backbone(sample, c_noise, image_embeds, added_time_ids)
        cond = self.condition(image_embeds, c_noise, t)                        # (b, t, cond_dim)
        out = []
        for i, f in enumerate(feats):
            c, h, w = f.shape[1:]
            if self.use_spatial:
                logits = self.spatial[i](f, cond.reshape(b * t, -1), b)        # (b*t, h*w)
                out.append(logits.reshape(b, -1))
            if self.use_temporal:
                ft = f.reshape(b, t, c, h * w).permute(0, 3, 2, 1).reshape(b * h * w, c, t)
                ct = cond[:, None].expand(b, h * w, t, -1).reshape(b * h * w, t, -1)
                logits = self.temporal[i](ft, ct, b)                           # (b*h*w, t)
                out.append(logits.reshape(b, -1))
        return out


class HeadsCheckpoint:
    """The discriminator's trainable heads as one checkpoint entry (the backbone is the frozen pretrained encoder)."""

    def __init__(self, disc: Discriminator):
        self.disc = disc

    def state_dict(self) -> dict:
        return self.disc.head_state_dict()

    def load_state_dict(self, sd: dict) -> None:
        self.disc.load_head_state_dict(sd)
