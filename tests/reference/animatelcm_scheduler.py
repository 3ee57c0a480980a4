"""AnimateLCM-SVD-xt's scheduler as a diffusers ``CMStochasticIterativeScheduler`` subclass: the
reference our ``sample_lcm`` is tested against (docs/reference.md#animatelcm-sampler).

The changes that make diffusers' scheduler AnimateLCM's: timesteps 0.25 ln sigma instead of 1000x
that; EDM/v-prediction boundary scalings c_skip = 1/(s^2+1), c_out = -s/sqrt(s^2+1) instead of the
sigma_min-shifted ones; final sigma 0 and next-noise scale s_{i+1} instead of
sqrt(s_{i+1}^2 - sigma_min^2); AnimateLCM's initial noise scale sqrt(sigma_max^2 + 1).
"""
from __future__ import annotations

import numpy as np
import torch
from diffusers import CMStochasticIterativeScheduler
from diffusers.schedulers.scheduling_consistency_models import CMStochasticIterativeSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor


class AnimateLCMScheduler(CMStochasticIterativeScheduler):
    """AnimateLCM-SVD-xt's scheduler as a CMStochasticIterativeScheduler subclass (see module doc)."""

    def __init__(self, num_train_timesteps: int = 40, sigma_min: float = 0.002, sigma_max: float = 700.0,
                 sigma_data: float = 1.0, s_noise: float = 1.0, rho: float = 7.0, clip_denoised: bool = False):
        super().__init__(num_train_timesteps=num_train_timesteps, sigma_min=sigma_min, sigma_max=sigma_max,
                         sigma_data=sigma_data, s_noise=s_noise, rho=rho, clip_denoised=clip_denoised)
        self.init_noise_sigma = (sigma_max ** 2 + sigma_data ** 2) ** 0.5

    def sigma_to_t(self, sigmas):
        sigmas = np.asarray(sigmas, dtype=np.float64)
        return 0.25 * np.log(sigmas + 1e-44)

    def set_timesteps(self, num_inference_steps=None, device=None, timesteps=None):
        super().set_timesteps(num_inference_steps, device=device, timesteps=timesteps)
        self.sigmas[-1] = 0.0  # the last level is followed by 0, not sigma_min

    def get_scalings_for_boundary_condition(self, sigma):
        sd = self.config.sigma_data
        return sd ** 2 / (sigma ** 2 + sd ** 2), -sigma * sd / (sigma ** 2 + sd ** 2) ** 0.5

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        if self.step_index is None:
            self._init_step_index(timestep)
        sigma, sigma_next = self.sigmas[self.step_index], self.sigmas[self.step_index + 1]
        c_skip, c_out = self.get_scalings_for_boundary_condition(sigma)
        denoised = c_out * model_output + c_skip * sample
        if self.config.clip_denoised:
            denoised = denoised.clamp(-1, 1)
        if len(self.timesteps) > 1:
            z = randn_tensor(model_output.shape, dtype=model_output.dtype, device=model_output.device,
                             generator=generator) * self.config.s_noise
        else:
            z = torch.zeros_like(model_output)
        prev = denoised + z * sigma_next.clamp(min=0, max=self.config.sigma_max)
        self._step_index += 1
        return CMStochasticIterativeSchedulerOutput(prev_sample=prev) if return_dict else (prev,)
