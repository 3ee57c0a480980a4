"""Denoiser and samplers (k-diffusion style: pure functions over one denoiser and explicit sigmas).

Parameterisation (FACTS sec. 4; SVD's v-prediction == EDM preconditioning, sigma_data = 1)::

    c_in = 1 / sqrt(s^2 + 1)     c_skip = 1 / (s^2 + 1)     c_out = -s / sqrt(s^2 + 1)
    c_noise = 0.25 ln s          D(x; s) = c_skip x + c_out F(c_in x; c_noise)

``F`` is the UNet (input: c_in x concatenated on channels with the image latent; timestep
c_noise; CLIP image embedding; added time ids). Every sigma is a float32 scalar and ``c_in x`` /
``c_skip x`` are computed as divisions by sqrt(s^2 + 1) / (s^2 + 1), the same float32 arithmetic as
diffusers' ``EulerDiscreteScheduler``, so ``sample_euler`` reproduces ``StableVideoDiffusionPipeline``
bit for bit.

Samplers (``noise`` is a unit normal tensor, shape (B, T, 4, H/8, W/8)):

* ``sample_euler`` (SVD): x_0 = noise * sqrt(s_0^2 + 1) (diffusers' ``init_noise_sigma`` for
  SVD's ``timestep_spacing="leading"``), then for i = 0..N-1:
  d = (x_i - D(x_i; s_i)) / s_i,  x_{i+1} = x_i + d (s_{i+1} - s_i), with s_N = 0.
* ``sample_lcm`` (AnimateLCM-SVD-xt, FACTS sec. 3): x_0 = noise * sqrt(sigma_max^2 + 1), then
  x_{i+1} = D(x_i; s_i) + s_{i+1} z_i with fresh z_i ~ N(0, I) from the per-sample generators
  (drawn at every step when N > 1, also the last, where s_N = 0; none for N = 1).
* ``sample_onestep`` (UFOGen / LADD / SF-V): x = sigma * noise with sigma = 700, output D(x; 700).
"""
from __future__ import annotations

import numpy as np
import torch

SIGMA_MIN = 0.002
SIGMA_MAX = 700.0
RHO = 7.0
LCM_TRAIN_LEVELS = 40  # AnimateLCM-SVD-xt's scheduler: num_train_timesteps


def _karras(ramp: np.ndarray, sigma_min: float, sigma_max: float, rho: float) -> np.ndarray:
    """Karras et al. (2022) levels: (max^(1/rho) + ramp (min^(1/rho) - max^(1/rho)))^rho, float64."""
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def karras_sigmas(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                  rho: float = RHO) -> torch.Tensor:
    """SVD's N-step schedule: N Karras levels with ramp = linspace(0, 1, N), then 0 (float32, N + 1).

    Same numbers as diffusers' EulerDiscreteScheduler with SVD's config (float64 then float32):
    N = 4 gives 700, 70.54, 2.269, 0.002, 0; N = 1 gives 700, 0.
    """
    if n < 1:
        raise ValueError(f"number of steps must be >= 1 (got {n})")
    sig = _karras(np.linspace(0, 1, n), sigma_min, sigma_max, rho)
    return torch.from_numpy(np.concatenate([sig, [0.0]]).astype(np.float32))


def animatelcm_levels(n: int, num_train_timesteps: int = LCM_TRAIN_LEVELS, sigma_min: float = SIGMA_MIN,
                      sigma_max: float = SIGMA_MAX, rho: float = RHO) -> np.ndarray:
    """AnimateLCM's N levels in float64: idx = arange(N) * (40 // N), ramp = idx / 39, Karras(ramp)."""
    if not 1 <= n <= num_train_timesteps:
        raise ValueError(f"AnimateLCM steps must be in 1..{num_train_timesteps} (got {n})")
    idx = np.arange(n) * (num_train_timesteps // n)
    return _karras(idx / (num_train_timesteps - 1), sigma_min, sigma_max, rho)


def animatelcm_sigmas(n: int, **kw) -> torch.Tensor:
    """AnimateLCM's sampling sigmas followed by 0 (float32, N + 1); FACTS sec. 3:

    N=1: 700 | N=2: 700, 13.678 | N=4: 700, 128.56, 13.678, 0.4969 |
    N=8: 700, 315.74, 128.56, 45.851, 13.678, 3.1666, 0.4969, 0.0398.
    """
    return torch.from_numpy(np.concatenate([animatelcm_levels(n, **kw), [0.0]]).astype(np.float32))


def animatelcm_timesteps(n: int, **kw) -> torch.Tensor:
    """UNet timesteps of AnimateLCM's sampler: 0.25 ln sigma of the float64 levels (float64, N)."""
    return torch.from_numpy(0.25 * np.log(animatelcm_levels(n, **kw)))


def _sigma(s) -> torch.Tensor:
    """A sigma as a 0-dim float32 CPU tensor (the scheduler's representation)."""
    if isinstance(s, torch.Tensor):
        return s.detach().to("cpu", torch.float32).reshape(())
    return torch.tensor(float(s), dtype=torch.float32)


class SVDDenoiser:
    """x0 = D(x; sigma) for an SVD-family UNet, with optional batch-2 classifier-free guidance.

    ``unet``: callable with the UNetSpatioTemporalConditionModel signature (the model, a timing
    wrapper, or a hand-made function). Conditioning tensors hold the conditional batch only:
    ``image_embeddings`` (B, 1, D), ``image_latents`` (B, T, 4, h, w), ``added_time_ids`` (B, 3).
    ``guidance`` (B, T, 1, 1, 1) or None: with guidance, each call is ONE UNet call on the batch
    [uncond; cond] (uncond = zero embedding and zero image latent, same time ids) and
    v = v_u + g (v_c - v_u), as diffusers' pipeline does.
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

    def model_output(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """F(c_in x; c_noise) after guidance (the v-prediction), in the model dtype."""
        s = _sigma(sigma)
        x_in = torch.cat([x, x]) if self.guidance is not None else x
        x_in = (x_in / ((s ** 2 + 1) ** 0.5)).to(self.dtype)
        x_in = torch.cat([x_in, self.image_latents], dim=2)
        t = (0.25 * s.log()).to(self.device)
        v = self.unet(x_in, t, encoder_hidden_states=self.image_embeddings,
                      added_time_ids=self.added_time_ids, return_dict=False)[0]
        if self.guidance is not None:
            v_uncond, v_cond = v.chunk(2)
            v = v_uncond + self.guidance * (v_cond - v_uncond)
        return v

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """D(x; sigma) = c_out F + x / (s^2 + 1), in float32."""
        s = _sigma(sigma)
        v = self.model_output(x, s)
        return v * (-s / (s ** 2 + 1) ** 0.5) + x.float() / (s ** 2 + 1)


def sample_euler(denoiser, noise: torch.Tensor, sigmas: torch.Tensor, callback=None) -> torch.Tensor:
    """Euler (SVD). x_0 = noise * sqrt(s_0^2 + 1); x_{i+1} = x_i + (x_i - D(x_i; s_i)) / s_i * (s_{i+1} - s_i).

    The update runs in float32 and x is cast back to the model dtype after each step (diffusers'
    EulerDiscreteScheduler.step, s_churn = 0). Returns x_N in the model dtype.
    """
    sigmas = sigmas.detach().to("cpu", torch.float32)
    x = noise * ((sigmas.max() ** 2 + 1) ** 0.5)
    for i in range(len(sigmas) - 1):
        s = sigmas[i]
        x0 = denoiser(x, s)
        xf = x.float()
        d = (xf - x0) / s
        x = (xf + d * (sigmas[i + 1] - s)).to(denoiser.dtype)
        if callback is not None:
            callback(i, s, x, x0)
    return x


def sample_lcm(denoiser, noise: torch.Tensor, sigmas: torch.Tensor, generators,
               sigma_max: float = SIGMA_MAX, callback=None) -> torch.Tensor:
    """AnimateLCM's stochastic iterative sampler (FACTS sec. 3).

    x_0 = noise * sqrt(sigma_max^2 + 1); x_{i+1} = D(x_i; s_i) + s_{i+1} z_i, z_i ~ N(0, I) drawn
    from ``generators`` (one per sample, after the initial noise) at every step when N > 1 -- the
    last step draws too and multiplies by s_N = 0, as the reference scheduler does.
    """
    from diffusers.utils.torch_utils import randn_tensor

    sigmas = sigmas.detach().to("cpu", torch.float32)
    n = len(sigmas) - 1
    x = noise * ((sigma_max ** 2 + 1) ** 0.5)
    for i in range(n):
        x0 = denoiser(x, sigmas[i])
        if n > 1:
            z = randn_tensor(x0.shape, generator=generators, device=denoiser.device, dtype=denoiser.dtype)
            x = (x0 + z * sigmas[i + 1]).to(denoiser.dtype)
        else:
            x = x0.to(denoiser.dtype)
        if callback is not None:
            callback(i, sigmas[i], x, x0)
    return x


def sample_onestep(denoiser, noise: torch.Tensor, sigma: float = SIGMA_MAX) -> torch.Tensor:
    """One EDM step (UFOGen / LADD / SF-V, FACTS sec. 4): x = sigma * noise, return D(x; sigma) (float32)."""
    s = _sigma(sigma)
    return denoiser(noise.float() * s, s)
