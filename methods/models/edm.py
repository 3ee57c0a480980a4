"""EDM noise levels and preconditioning: the one home of the Karras schedule and the denoiser.

Used by the samplers (methods.sampling), the trainers (sfv_train) and the latency code.

Parameterisation (paper eq. 2/6, docs/reference.md#edm-preconditioning; SVD's v-prediction == EDM with sigma_data = 1)::

    c_in = 1 / sqrt(s^2 + 1)     c_skip = 1 / (s^2 + 1)     c_out = -s / sqrt(s^2 + 1)
    c_noise = 0.25 ln s          D(x; s) = c_skip x + c_out F(c_in x; c_noise)

``F`` is the UNet: input c_in x concatenated on channels with the image latent, timestep c_noise,
the CLIP image embedding and the added time ids. ``c_in x`` and ``c_skip x`` are computed as
divisions by sqrt(s^2 + 1) and (s^2 + 1) in float32, the arithmetic of diffusers'
``EulerDiscreteScheduler``, so the samplers reproduce ``StableVideoDiffusionPipeline`` bit for bit.

Karras levels (Karras et al. 2022; paper eq. 5): (max^(1/rho) + ramp (min^(1/rho) - max^(1/rho)))^rho,
sigma_min 0.002, sigma_max 700, rho 7, computed in float64.
"""
from __future__ import annotations

import numpy as np
import torch

SIGMA_MIN = 0.002
SIGMA_MAX = 700.0
RHO = 7.0


def karras(ramp, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO) -> np.ndarray:
    """Karras levels for ``ramp`` in [0, 1] (0 -> sigma_max, 1 -> sigma_min), float64."""
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + np.asarray(ramp, dtype=np.float64) * (lo - hi)) ** rho


def karras_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                  rho: float = RHO) -> torch.Tensor:
    """SVD's N-step sampling schedule: N levels with ramp = linspace(0, 1, N), then 0 (float32, N + 1).

    Same numbers as diffusers' EulerDiscreteScheduler with SVD's config (float64 then float32):
    N = 4 gives 700, 70.54, 2.269, 0.002, 0; N = 1 gives 700, 0.
    """
    if n < 1:
        raise ValueError(f"number of steps must be >= 1 (got {n})")
    sig = karras(np.linspace(0, 1, n), sigma_min, sigma_max, rho)
    return torch.from_numpy(np.concatenate([sig, [0.0]]).astype(np.float32))


def karras_levels(n: int) -> torch.Tensor:
    """The n training levels t = 0..n-1, ASCENDING (0.002 .. 700), float64 (paper eq. 5).

    T = 4 gives {0.002, 2.269, 70.54, 700}, the one-step generators' levels."""
    if n < 2:
        raise ValueError(f"need at least 2 levels (got {n})")
    return torch.from_numpy(karras(np.arange(n - 1, -1, -1) / (n - 1)))


def scalings(sigma: torch.Tensor):
    """(c_skip, c_out, c_in, c_noise) for a tensor of sigmas (any shape)."""
    s2 = sigma * sigma + 1
    return 1 / s2, -sigma / s2.sqrt(), 1 / s2.sqrt(), c_noise(sigma)


def c_noise(sigma: torch.Tensor) -> torch.Tensor:
    """The UNet's timestep for noise level ``sigma``: 0.25 ln sigma (same dtype and device)."""
    return 0.25 * sigma.log()


def scale_input(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """c_in x, computed as x / sqrt(sigma^2 + 1) (diffusers' ``scale_model_input``); ``sigma`` broadcasts."""
    return x / (sigma * sigma + 1).sqrt()


def denoised(x: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """D = c_skip x + c_out v in float32, computed as v c_out + x / (sigma^2 + 1) (diffusers' scheduler step).

    With a float16 ``v`` and a 0-dim ``sigma`` the product v c_out is taken in float16 first."""
    s2 = sigma * sigma + 1
    return v * (-sigma / s2.sqrt()) + x.float() / s2


def noise_scale(sigma):
    """sqrt(sigma^2 + 1) = 1 / c_in: the first sample's scale (diffusers' ``init_noise_sigma``); float or tensor."""
    return (sigma ** 2 + 1) ** 0.5


def scalar_sigma(s) -> torch.Tensor:
    """A scalar sigma as a 0-dim float32 CPU tensor (the scheduler's representation)."""
    if isinstance(s, torch.Tensor):
        return s.detach().to("cpu", torch.float32).reshape(())
    return torch.tensor(float(s), dtype=torch.float32)


class Denoiser:
    """x0 = D(x; sigma) for an SVD-family UNet, with optional batch-2 classifier-free guidance.

    ``unet``: callable with the UNetSpatioTemporalConditionModel signature (the model, a timing
    wrapper, or a hand-made function). Conditioning holds the conditional batch only:
    ``image_embeddings`` (B, 1, D), ``image_latents`` (B, T, 4, h, w) or (B, 4, h, w) (repeated
    over the frames), ``added_time_ids`` (B, 3). ``guidance`` (B, T, 1, 1, 1) or None: with
    guidance each call is ONE UNet call on the batch [uncond; cond] (uncond = zero embedding and
    zero image latent, same time ids) and v = v_u + g (v_c - v_u), as diffusers' pipeline does.

    ``sigma`` is a scalar (sampling: the scheduler's float32 arithmetic) or a (B,) tensor of
    per-video levels (training). The output is float32 (with a scalar sigma and a float16 model the
    product c_out F is taken in float16 first, as diffusers' scheduler does).
    """

    def __init__(self, unet, image_embeddings, image_latents, added_time_ids, guidance=None):
        self.unet = unet
        self.guidance = guidance
        if guidance is not None:
            image_embeddings = torch.cat([torch.zeros_like(image_embeddings), image_embeddings])
            image_latents = torch.cat([torch.zeros_like(image_latents), image_latents])
            added_time_ids = torch.cat([added_time_ids, added_time_ids])
        self.image_embeddings = image_embeddings
        self.image_latents = image_latents
        self.added_time_ids = added_time_ids
        self.dtype = image_latents.dtype
        self.device = image_latents.device

    def _sigma_and_timestep(self, sigma, x):
        """(sigma broadcastable over x in float32, the UNet timestep c_noise)."""
        if isinstance(sigma, torch.Tensor) and sigma.ndim == 1:
            s = sigma.to(x.device, torch.float32).view(-1, 1, 1, 1, 1)
            t = c_noise(s.flatten())
            return s, (torch.cat([t, t]) if self.guidance is not None else t)
        s = scalar_sigma(sigma)
        return s, c_noise(s).to(self.device)

    def model_output(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """F(c_in x; c_noise) after guidance (the v-prediction), in the model dtype."""
        s, t = self._sigma_and_timestep(sigma, x)
        x_in = torch.cat([x, x]) if self.guidance is not None else x
        if s.ndim and self.guidance is not None:
            s = torch.cat([s, s])
        x_in = scale_input(x_in, s).to(self.dtype)
        lat = self.image_latents
        if lat.ndim == 4:
            lat = lat[:, None].expand(-1, x.shape[1], -1, -1, -1)
        x_in = torch.cat([x_in, lat.to(x_in.dtype)], dim=2)
        v = self.unet(x_in, t, encoder_hidden_states=self.image_embeddings,
                      added_time_ids=self.added_time_ids, return_dict=False)[0]
        if self.guidance is not None:
            v_uncond, v_cond = v.chunk(2)
            v = v_uncond + self.guidance * (v_cond - v_uncond)
        return v

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """D(x; sigma) = c_out F + x / (s^2 + 1), in float32."""
        s, _ = self._sigma_and_timestep(sigma, x)
        return denoised(x, self.model_output(x, sigma), s)
