"""Losses of SF-V latent adversarial training (paper eq. 8-11) and its baselines.

Sign convention: D scores REAL inputs high (the usual hinge form). The paper writes eq. 8/11 with
the opposite sign of D (real low); the two are the same objective under D -> -D.

* D: mean over heads of [relu(1 - D(real)).mean() + relu(1 + D(fake)).mean()]  (+ gamma * R1)
* G adversarial: mean over heads of -D(fake).mean()
* pseudo-Huber (eq. 9): per video sqrt(||x0_hat - x0||_2^2 + c^2) - c, the norm over all its
  elements, averaged over the batch; ``c="auto"`` is 0.00054 * sqrt(d) (d = elements per video,
  the rule of improved consistency training).
* MSE: squared differences; "diffusion": weighted by (s^2 + 1)/s^2 (the v-prediction loss).
  ``reduction="video"`` sums over a video's elements, ``"element"`` averages them; batch mean.
* R1: ||grad_x s(x)||^2 per video, averaged, where s(x) is the video's score (mean over heads of
  its mean logit) and x the discriminator input c_in(sigma') x'_t of the REAL video.
  ``r1_exact`` differentiates with create_graph=True (double backward; run D under the math
  SDPA backend). ``r1_approx`` is ||s(x + eps n) - s(x)||^2 / eps^2, n ~ N(0, I) (its expectation
  is the exact R1 to first order), no double backward.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (bf16 under autocast -> float32; float64 stays float64)."""
    return x if x.dtype == torch.float64 else x.float()


def score(logits: list[torch.Tensor]) -> torch.Tensor:
    """Per-video score (b,): mean over heads of the mean logit."""
    return torch.stack([_at_least_float32(lg).mean(dim=1) for lg in logits]).mean(0)


def hinge_d(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    terms = [F.relu(1 - _at_least_float32(r)).mean() + F.relu(1 + _at_least_float32(f)).mean()
             for r, f in zip(real, fake)]
    return torch.stack(terms).mean()


def hinge_g(fake: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([-_at_least_float32(f).mean() for f in fake]).mean()


def accuracy(logits: list[torch.Tensor], real: bool) -> float:
    """Fraction of all head logits on the correct side of 0 (real > 0, fake < 0)."""
    flat = torch.cat([lg.detach().float().flatten() for lg in logits])
    return float(((flat > 0) if real else (flat < 0)).float().mean())


def huber_c_auto(x: torch.Tensor) -> float:
    return 0.00054 * math.sqrt(x[0].numel())


def pseudo_huber(x0_hat: torch.Tensor, x0: torch.Tensor, c: float, reduction: str = "video") -> torch.Tensor:
    """``video``: per video sqrt(||d||^2 + c^2) - c over all its elements (eq. 9); ``element``: the mean
    over elements of sqrt(d^2 + c^2) - c."""
    d2 = (_at_least_float32(x0_hat) - _at_least_float32(x0)).square()
    if reduction == "element":
        return (torch.sqrt(d2 + c * c) - c).flatten(1).mean(1).mean()
    return (torch.sqrt(d2.flatten(1).sum(1) + c * c) - c).mean()


def _reduce(per_element: torch.Tensor, reduction: str) -> torch.Tensor:
    flat = per_element.flatten(1)
    return (flat.sum(1) if reduction == "video" else flat.mean(1)).mean()


def mse(x0_hat: torch.Tensor, x0: torch.Tensor, reduction: str = "element", weight=None) -> torch.Tensor:
    """Squared error, optionally weighted per video (``weight`` (b,)), reduced per ``reduction``."""
    d2 = (_at_least_float32(x0_hat) - _at_least_float32(x0)).square()
    if weight is not None:
        d2 = d2 * weight.to(d2).view(-1, *([1] * (d2.ndim - 1)))
    return _reduce(d2, reduction)


def diffusion_weight(sigma: torch.Tensor) -> torch.Tensor:
    """(s^2 + 1) / s^2: the x0-space weight of SVD's v-prediction (EDM, sigma_data = 1) denoising loss."""
    s2 = sigma.double() ** 2
    return ((s2 + 1) / s2).float()


def r1_exact(score_real: torch.Tensor, x_real: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(score_real.sum(), x_real, create_graph=True)
    return _at_least_float32(grad).square().flatten(1).sum(1).mean()


def r1_approx(score_real: torch.Tensor, score_perturbed: torch.Tensor, eps: float) -> torch.Tensor:
    return ((_at_least_float32(score_perturbed) - _at_least_float32(score_real)).square() / (eps * eps)).mean()


def reconstruction(x0_hat: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, kind: str, reduction: str,
                   huber_c: float | None) -> torch.Tensor:
    """The reconstruction term ``kind`` (none | mse | diffusion | pseudo-huber); ``huber_c`` None: the auto c
    (with ``reduction="element"`` scaled to one element)."""
    if kind == "none":
        return torch.zeros((), device=x0.device)
    if kind in ("mse", "diffusion"):
        return mse(x0_hat, x0, reduction, diffusion_weight(sigma) if kind == "diffusion" else None)
    c = huber_c
    if c is None:
        c = huber_c_auto(x0) / (x0[0].numel() ** 0.5 if reduction == "element" else 1)
    return pseudo_huber(x0_hat, x0, c, reduction)
