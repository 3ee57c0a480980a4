"""Instruments of latent adversarial training: what a GAN researcher logs to see whether the adversarial
signal reaches the generator and what the discriminator can tell apart.

* Generator terms (``GradProbe``): the gradient of each generator loss term with respect to x0_hat --
  the adversarial term and lambda x the reconstruction term, both as G sees them (batch means, before
  the division by the accumulation count) -- their norms over the whole step's batch (``gn_adv``,
  ``gn_rec``), the ratio ``gn_ratio`` = adversarial / reconstruction (inf-free: 0 when both are 0, a
  large finite number when only the reconstruction is 0) and their cosine ``gn_cos`` (negative: the two
  terms pull x0_hat in opposite directions).
* Discriminator (``d_stats``): accuracy on real and fake inputs per head kind (``acc_real_spatial``,
  ``acc_fake_temporal``, ...: the fraction of that kind's logits on the right side of 0), per noise
  level bucket of sigma' (``acc_real_sig<lo>-<hi>``: per video, the fraction of all its logits on the
  right side, averaged over the videos whose sigma' falls in the bucket; a bucket with no video in a
  step is absent from that step's metrics), and the mean |logit| of real and fake inputs.
"""
from __future__ import annotations

import math

import torch

# sigma' bucket edges: the D noise rules put their mass on 0.002..700 (Karras levels)
SIGMA_EDGES = (0.1, 1.0, 10.0)
RATIO_CAP = 1e6


def bucket_names() -> list[str]:
    edges = (0.002, *SIGMA_EDGES, 700)
    return [f"sig{lo:g}-{hi:g}" for lo, hi in zip(edges[:-1], edges[1:])]


def bucket_of(sigma: torch.Tensor) -> torch.Tensor:
    """Index into ``bucket_names()`` of each sigma' (b,)."""
    return torch.bucketize(sigma.double().cpu(), torch.tensor(SIGMA_EDGES, dtype=torch.float64), right=True)


class GradProbe:
    """Accumulates the two generator terms' gradients over a step's micro-batches (different videos)."""

    def __init__(self):
        self.sq_adv = self.sq_rec = self.dot = 0.0

    def add(self, g_adv: torch.Tensor, g_rec: torch.Tensor) -> None:
        a, r = g_adv.detach().double(), g_rec.detach().double()
        self.sq_adv += float(a.square().sum())
        self.sq_rec += float(r.square().sum())
        self.dot += float((a * r).sum())

    def metrics(self) -> dict:
        na, nr = math.sqrt(self.sq_adv), math.sqrt(self.sq_rec)
        ratio = na / nr if nr > 0 else (RATIO_CAP if na > 0 else 0.0)
        cos = self.dot / (na * nr) if na > 0 and nr > 0 else 0.0
        return {"gn_adv": na, "gn_rec": nr, "gn_ratio": min(ratio, RATIO_CAP), "gn_cos": cos}


def _correct(logits: list[torch.Tensor], real: bool) -> list[torch.Tensor]:
    return [((lg > 0) if real else (lg < 0)).float() for lg in logits]


def d_stats(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]], kinds: list[str],
            sigma_d: list[torch.Tensor]) -> dict:
    """D's accuracy per head kind and sigma' bucket, and mean |logit|, over a step's micro-batches.

    ``real``/``fake``: per micro-batch, the list of per-head logits (b, positions); ``kinds``: the head
    kind of each list entry; ``sigma_d``: per micro-batch the (b,) sigma'."""
    heads = len(kinds)
    cat = {name: [torch.cat([mb[h].detach().float().cpu() for mb in side]) for h in range(heads)]
           for name, side in (("real", real), ("fake", fake))}
    sig = torch.cat([s.detach().double().cpu().reshape(-1) for s in sigma_d])
    out = {}
    for name, logits in cat.items():
        ok = _correct(logits, name == "real")
        for kind in sorted(set(kinds)):
            sel = [o for o, k in zip(ok, kinds) if k == kind]
            out[f"acc_{name}_{kind}"] = float(torch.cat([o.flatten() for o in sel]).mean())
        per_video = torch.cat(ok, dim=1).mean(1)                       # (B,) over all heads and positions
        bucket = bucket_of(sig)
        for i, label in enumerate(bucket_names()):
            sel = bucket == i
            if bool(sel.any()):
                out[f"acc_{name}_{label}"] = float(per_video[sel].mean())
        out[f"logit_abs_{name}"] = float(torch.cat([lg.abs().flatten() for lg in logits]).mean())
    return out
