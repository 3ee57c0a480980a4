"""Fréchet Video Distance: feature statistics and the distance.

Rules (docs/reference.md#fvd-statistics and #frechet-distance):

* Statistics are float64 running sums (N, sum x, sum x x^T) that merge by addition (several
  processes, or ``torch.distributed.all_reduce`` of ``to_tensor()``). mean = sum/N;
  covariance = (sum x x^T - N mu mu^T) / N ("biased", StyleGAN-V and cd-fvd, the default) or
  / (N - 1) ("unbiased", TF and TATS). N is reported with every number: FVD is only comparable
  at equal N (two samples of one distribution give FD ~ 81,000/N with D = 400).
* Distance: |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2), all in float64. The trace term is
  computed as sum(sqrt(eig(A))) with A = S1^1/2 S2 S1^1/2 (symmetric, PSD; similar to S1 S2 so
  it has the same eigenvalues), using symmetric eigendecompositions; eigenvalues below the
  numerical-rank tolerance D * eps * max (rounding noise of true zeros, e.g. when N < D) are set
  to 0. Unlike scipy's sqrtm (version-sensitive,
  complex output) or an SVD form with an absolute eps (wrong when variances are tiny), this is
  exact on the closed-form cases and real by construction.
"""
from __future__ import annotations

import json
import math
from typing import Iterable

import numpy as np

from sfv_core.errors import UserError
from sfv_core.fsutil import atomic_path

STATS_FORMAT = "sfv-bench-featurestats-v1"


class FeatureStats:
    """Float64 running sums of D-dimensional features: ``n``, ``sum`` (D,), ``sum_outer`` (D, D)."""

    def __init__(self, dim: int, keep: bool = False):
        self.dim = int(dim)
        self.n = 0
        self.sum = np.zeros(self.dim, np.float64)
        self.sum_outer = np.zeros((self.dim, self.dim), np.float64)
        self.metadata: dict = {}
        self.features: list | None = [] if keep else None   # the rows themselves (for intervals)

    def append(self, feats) -> "FeatureStats":
        x = np.asarray(feats, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected features (B, {self.dim}), got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("features contain NaN or inf")
        self.n += x.shape[0]
        self.sum += x.sum(axis=0)
        self.sum_outer += x.T @ x
        if self.features is not None:
            self.features.append(x)
        return self

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """Add another part's sums into this one (in place); returns self."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {other.dim} into {self.dim}")
        self.n += other.n
        self.sum += other.sum
        self.sum_outer += other.sum_outer
        return self

    def mean(self) -> np.ndarray:
        self._need(1)
        return self.sum / self.n

    def cov(self, unbiased: bool = False) -> np.ndarray:
        """Covariance with 1/N (default) or 1/(N-1)."""
        self._need(2 if unbiased else 1)
        mu = self.mean()
        c = (self.sum_outer - self.n * np.outer(mu, mu)) / (self.n - 1 if unbiased else self.n)
        return (c + c.T) / 2

    def _need(self, k: int) -> None:
        if self.n < k:
            raise ValueError(f"statistics need at least {k} feature vectors, have {self.n}")

    # -- serialisation -------------------------------------------------------------------------
    def to_tensor(self):
        """Flat float64 tensor [n, sum, sum_outer] (for torch.distributed.all_reduce with SUM)."""
        import torch
        return torch.cat([torch.tensor([float(self.n)], dtype=torch.float64),
                          torch.from_numpy(self.sum.copy()), torch.from_numpy(self.sum_outer.ravel().copy())])

    @classmethod
    def from_tensor(cls, t, dim: int) -> "FeatureStats":
        a = t.detach().cpu().double().numpy()
        if a.shape != (1 + dim + dim * dim,):
            raise ValueError(f"tensor of size {a.shape} does not hold statistics of dimension {dim}")
        s = cls(dim)
        s.n = int(round(a[0]))
        s.sum = a[1:1 + dim].copy()
        s.sum_outer = a[1 + dim:].reshape(dim, dim).copy()
        return s

    def save(self, path, metadata: dict | None = None) -> None:
        """Atomic .npz with the sums and a JSON metadata dict (what produced them)."""
        meta = dict(self.metadata, **(metadata or {}))
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, format=np.array(STATS_FORMAT), n=np.array(self.n, np.int64), sum=self.sum,
                         sum_outer=self.sum_outer, metadata=np.array(json.dumps(meta, sort_keys=True, default=str)))

    @classmethod
    def load(cls, path) -> "FeatureStats":
        try:
            with np.load(path, allow_pickle=False) as z:
                if "format" not in z.files or str(z["format"]) != STATS_FORMAT:
                    raise ValueError("missing format tag")
                s = cls(z["sum"].shape[0])
                s.n, s.sum, s.sum_outer = int(z["n"]), z["sum"].astype(np.float64), z["sum_outer"].astype(np.float64)
                s.metadata = json.loads(str(z["metadata"]))
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{path}: not a sfv-bench statistics file ({e})") from e
        problem = (f"sum has shape {s.sum.shape}, sum_outer {s.sum_outer.shape}" if s.sum.ndim != 1
                   or s.sum_outer.shape != (s.dim, s.dim) else
                   f"n = {s.n}" if s.n < 1 else
                   "NaN or inf in the sums" if not (np.isfinite(s.sum).all() and np.isfinite(s.sum_outer).all()) else
                   "its metadata is not a mapping" if not isinstance(s.metadata, dict) else None)
        if problem:
            raise UserError(f"{path}: damaged statistics file ({problem}); delete it and recompute")
        return s

    def __repr__(self) -> str:
        return f"FeatureStats(dim={self.dim}, n={self.n})"


def _clip_eigenvalues(w: np.ndarray) -> np.ndarray:
    """Eigenvalues below the numerical-rank tolerance (D * eps * max|w|, numpy's matrix_rank rule)
    are rounding noise of true zeros: set them to 0 (their square roots would add ~sqrt(eps))."""
    tol = w.shape[0] * np.finfo(np.float64).eps * max(np.abs(w).max(initial=0.0), np.finfo(np.float64).tiny)
    return np.where(w > tol, w, 0.0)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(_clip_eigenvalues(w))) @ v.T


def frechet_distance(mu1, s1, mu2, s2) -> float:
    """|mu1-mu2|^2 + tr(S1 + S2 - 2 sqrt(S1 S2)) in float64 via the symmetric eigenvalue form."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(s1, np.float64), np.asarray(s2, np.float64)
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"shape mismatch: mu {mu1.shape} {mu2.shape}, cov {s1.shape} {s2.shape}")
    for name, a in (("mu1", mu1), ("mu2", mu2), ("s1", s1), ("s2", s2)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or inf")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    r1 = _psd_sqrt(s1)
    a = r1 @ s2 @ r1
    tr_sqrt = np.sqrt(_clip_eigenvalues(np.linalg.eigvalsh((a + a.T) / 2))).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def fvd_from_stats(real: FeatureStats, fake: FeatureStats, covariance: str = "biased") -> dict:
    """FVD between two FeatureStats; ``covariance`` 'biased' (1/N) or 'unbiased' (1/(N-1))."""
    if covariance not in ("biased", "unbiased"):
        raise ValueError(f"covariance must be 'biased' or 'unbiased', got {covariance!r}")
    ub = covariance == "unbiased"
    value = frechet_distance(real.mean(), real.cov(ub), fake.mean(), fake.cov(ub))
    return {"fvd": value, "n_real": real.n, "n_fake": fake.n, "covariance": covariance, "dim": real.dim}


MIN_INTERVAL_N = 4      # generated videos the jackknife interval needs


def interval_text(interval, n: int | None = None) -> str:
    """The 95% interval as every report prints it (console, table.md, table.csv): ``[lo, hi]``, a lower
    end below 0 shown as ``0 (clipped)`` (an FVD is never negative; the jackknife's normal interval
    can reach below 0 at small N), and an interval that could not be computed named as such with the
    reason instead of ``[nan, nan]``."""
    lo, hi = interval if interval else (None, None)
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        few = n is not None and n < MIN_INTERVAL_N
        return f"none (N={n}: needs >= {MIN_INTERVAL_N} videos)" if few else "none (not computable)"
    return f"[{'0 (clipped)' if lo < 0 else f'{lo:.2f}'}, {hi:.2f}]"


def fvd_interval(real: FeatureStats, fake_features: np.ndarray, covariance: str = "biased", groups: int = 16,
                 seed: int = 0) -> tuple[float, float]:
    """95% interval of the FVD over the generated videos, real statistics fixed: FVD +- 1.96 SE with
    the grouped (delete-a-group) jackknife SE over ``groups`` seeded random groups of videos.

    Why a jackknife: checked on Gaussian features (D = 64, N = 64 and 256, 100 fresh samples), the
    percentile bootstrap (resampling with replacement duplicates videos) was about 3x wider than the
    spread of FVD over fresh samples, this jackknife about 1.4x (conservative, never narrower).
    It says how much the number moves with the particular N videos generated; the real side's
    sampling noise is not in it. Each FVD costs O(N D^2): with N < D the trace term comes from the
    N x N Gram matrix of (x - mean) S1^1/2 (the same nonzero eigenvalues as S1^1/2 S2 S1^1/2)."""
    x = np.asarray(fake_features, np.float64)
    n = x.shape[0]
    if n < MIN_INTERVAL_N:
        return float("nan"), float("nan")
    groups = min(groups, n)          # below 16 videos: the leave-one-out jackknife
    ub = covariance == "unbiased"
    mu1, s1 = real.mean(), real.cov(ub)
    r1 = _psd_sqrt((s1 + s1.T) / 2)
    tr1 = np.trace(s1)

    def fd(xb):
        m = len(xb)
        mu2 = xb.mean(0)
        c = (xb - mu2) @ r1
        gram = (c @ c.T if m <= x.shape[1] else c.T @ c) / (m - 1 if ub else m)
        tr_sqrt = np.sqrt(_clip_eigenvalues(np.linalg.eigvalsh((gram + gram.T) / 2))).sum()
        cc = xb - mu2
        d = mu1 - mu2
        return float(d @ d + tr1 + (cc * cc).sum() / (m - 1 if ub else m) - 2.0 * tr_sqrt)

    parts = np.array_split(np.random.default_rng(seed).permutation(n), groups)
    loo = np.array([fd(np.delete(x, g, axis=0)) for g in parts])
    se = float(np.sqrt((groups - 1) / groups * ((loo - loo.mean()) ** 2).sum()))
    est = fd(x)
    return est - 1.96 * se, est + 1.96 * se
