"""Noise levels of latent adversarial training (SF-V paper eq. 5-7): generator levels and the
discriminator's noise rules. The Karras schedule and EDM scalings are methods.models.edm.

* Generator levels: T_g = 4 Karras levels {0.002, 2.269, 70.54, 700}; training draws sigma uniformly
  from the upper three, inference is one step from 700 (docs/reference.md#one-step-generator).
* Discriminator noise sigma' (real and fake share it):
  - ``lognormal-discrete`` (SF-V): T_d = 1000 Karras levels, level i >= 1 drawn with
    P(i) proportional to Phi((ln s_i - P_mean)/|P_std|) - Phi((ln s_{i-1} - P_mean)/|P_std|)
    (eq. 7; a negative P_std is read as its magnitude, the paper's default is -1 / -1).
  - ``next-level`` (UFOGen): the next lower generator level (700 -> 70.54 -> 2.269 -> 0.002).
  - ``lognormal`` (LADD): ln sigma' ~ N(P_mean, P_std^2), clamped to [s_min, s_max]; LADD's
    logit-normal on the flow time t is this lognormal on sigma = t / (1 - t).
"""
from __future__ import annotations

import math

import torch

from methods.models.edm import SIGMA_MAX, SIGMA_MIN, karras_levels

from .config import D_NOISE_CHOICES

T_G = 4
T_D = 1000


def generator_sigmas(n: int = T_G) -> torch.Tensor:
    """The T_g generator levels, ascending: {0.002, 2.269, 70.54, 700} for T_g = 4."""
    return karras_levels(n)


def discrete_lognormal_probs(p_mean: float, p_std: float, n: int = T_D) -> torch.Tensor:
    """P(level i), i = 0..n-1, of the discretised lognormal (eq. 7) over n Karras levels.

    Level 0 gets probability 0 (the paper draws t in 1..T_d-1); the rest are CDF differences
    normalised to sum to 1. Computed in float64.
    """
    if p_std == 0:
        raise ValueError("P_std must not be 0")
    s = karras_levels(n)
    z = (s.log() - p_mean) / abs(p_std)
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    p = torch.zeros(n, dtype=torch.float64)
    p[1:] = cdf[1:] - cdf[:-1]
    total = p.sum()
    if not total > 0:
        raise ValueError(f"P_mean={p_mean}, P_std={p_std} put no mass on [{SIGMA_MIN}, {SIGMA_MAX}]")
    return p / total


class NoiseSampler:
    """Draws generator levels and discriminator levels with an explicit ``torch.Generator``."""

    def __init__(self, d_noise: str = "lognormal-discrete", p_mean: float = -1.0, p_std: float = -1.0,
                 t_d: int = T_D, t_g: int = T_G):
        if d_noise not in D_NOISE_CHOICES:
            raise ValueError(f"d_noise must be one of {D_NOISE_CHOICES} (got {d_noise!r})")
        self.d_noise, self.p_mean, self.p_std = d_noise, float(p_mean), float(p_std)
        self.g_levels = generator_sigmas(t_g)
        self.d_levels = karras_levels(t_d)
        self.d_probs = discrete_lognormal_probs(p_mean, p_std, t_d) if d_noise == "lognormal-discrete" else None

    def sample_g(self, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(index into the generator levels, sigma), index uniform in 1..T_g-1; float64 sigma."""
        idx = torch.randint(1, len(self.g_levels), (batch,), generator=gen)
        return idx, self.g_levels[idx]

    def sample_d(self, g_idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """sigma' for each sample (float64), given the generator level indices (for next-level)."""
        batch = g_idx.shape[0]
        if self.d_noise == "next-level":
            return self.g_levels[g_idx - 1]
        if self.d_noise == "lognormal-discrete":
            i = torch.multinomial(self.d_probs, batch, replacement=True, generator=gen)
            return self.d_levels[i]
        ln = self.p_mean + abs(self.p_std) * torch.randn(batch, generator=gen, dtype=torch.float64)
        return ln.exp().clamp(SIGMA_MIN, SIGMA_MAX)
