"""Samplers, k-diffusion style: pure functions over one denoiser (methods.models.edm.Denoiser) and
an explicit sigma tensor. ``noise`` is a unit normal tensor (B, T, 4, h, w).

* ``sample_euler`` (SVD): x_0 = noise * sqrt(s_0^2 + 1) (diffusers' ``init_noise_sigma`` for
  SVD's ``timestep_spacing="leading"``), then for i = 0..N-1:
  d = (x_i - D(x_i; s_i)) / s_i,  x_{i+1} = x_i + d (s_{i+1} - s_i), with s_N = 0.
* ``sample_lcm`` (AnimateLCM-SVD-xt, docs/reference.md#animatelcm-sampler): x_0 = noise * sqrt(sigma_max^2 + 1), then
  x_{i+1} = D(x_i; s_i) + s_{i+1} z_i with fresh z_i ~ N(0, I) from the per-sample generators
  (drawn at every step when N > 1, also the last, where s_N = 0; none for N = 1).
* ``sample_onestep`` (UFOGen / LADD / SF-V): x = sigma * noise with sigma = 700, output D(x; 700).

AnimateLCM's levels: 40 training levels (Karras, 0.002..700, rho 7); for N steps
idx = arange(N) * (40 // N), ramp = idx / 39, then 0 (docs/reference.md#animatelcm-sampler).
"""
from __future__ import annotations

import numpy as np
import torch

from .models.edm import SIGMA_MAX, karras, noise_scale, scalar_sigma

LCM_TRAIN_LEVELS = 40  # AnimateLCM-SVD-xt's scheduler: num_train_timesteps


def animatelcm_levels(n: int, num_train_timesteps: int = LCM_TRAIN_LEVELS) -> np.ndarray:
    """AnimateLCM's N levels in float64: idx = arange(N) * (40 // N), ramp = idx / 39, Karras(ramp)."""
    if not 1 <= n <= num_train_timesteps:
        raise ValueError(f"AnimateLCM steps must be in 1..{num_train_timesteps} (got {n})")
    idx = np.arange(n) * (num_train_timesteps // n)
    return karras(idx / (num_train_timesteps - 1))


def animatelcm_sigmas(n: int, num_train_timesteps: int = LCM_TRAIN_LEVELS) -> torch.Tensor:
    """AnimateLCM's sampling sigmas followed by 0 (float32, N + 1); docs/reference.md#animatelcm-sampler:

    N=1: 700 | N=2: 700, 13.678 | N=4: 700, 128.56, 13.678, 0.4969 |
    N=8: 700, 315.74, 128.56, 45.851, 13.678, 3.1666, 0.4969, 0.0398.
    """
    levels = animatelcm_levels(n, num_train_timesteps)
    return torch.from_numpy(np.concatenate([levels, [0.0]]).astype(np.float32))


def sample_euler(denoiser, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Euler (SVD). x_0 = noise * sqrt(s_0^2 + 1); x_{i+1} = x_i + (x_i - D(x_i; s_i)) / s_i * (s_{i+1} - s_i).

    The update runs in float32 and x is cast back to the model dtype after each step (diffusers'
    EulerDiscreteScheduler.step, s_churn = 0). Returns x_N in the model dtype.
    """
    sigmas = sigmas.detach().to("cpu", torch.float32)
    x = noise * noise_scale(sigmas.max())
    for i in range(len(sigmas) - 1):
        s = sigmas[i]
        x0 = denoiser(x, s)
        xf = x.float()
        d = (xf - x0) / s
        x = (xf + d * (sigmas[i + 1] - s)).to(denoiser.dtype)
    return x


def sample_lcm(denoiser, noise: torch.Tensor, sigmas: torch.Tensor, generators,
               sigma_max: float = SIGMA_MAX) -> torch.Tensor:
    """AnimateLCM's stochastic iterative sampler (docs/reference.md#animatelcm-sampler).

    x_0 = noise * sqrt(sigma_max^2 + 1); x_{i+1} = D(x_i; s_i) + s_{i+1} z_i, z_i ~ N(0, I) drawn
    from ``generators`` (one per sample, after the initial noise) at every step when N > 1 -- the
    last step draws too and multiplies by s_N = 0, as the reference scheduler does.
    """
    from diffusers.utils.torch_utils import randn_tensor

    sigmas = sigmas.detach().to("cpu", torch.float32)
    n = len(sigmas) - 1
    x = noise * noise_scale(sigma_max)
    for i in range(n):
        x0 = denoiser(x, sigmas[i])
        if n > 1:
            z = randn_tensor(x0.shape, generator=generators, device=denoiser.device, dtype=denoiser.dtype)
            x = (x0 + z * sigmas[i + 1]).to(denoiser.dtype)
        else:
            x = x0.to(denoiser.dtype)
    return x


def sample_onestep(denoiser, noise: torch.Tensor, sigma: float = SIGMA_MAX) -> torch.Tensor:
    """One EDM step (UFOGen / LADD / SF-V, docs/reference.md#one-step-generator): x = sigma * noise, return D(x; sigma) (float32)."""
    s = scalar_sigma(sigma)
    return denoiser(noise.float() * s, s)
