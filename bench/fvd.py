"""Fréchet Video Distance: feature statistics, the distance, cached real statistics, `sfv-bench fvd`.

Rules (FACTS sec. 5):

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
* Real statistics are cached under a hash of the file list (path, size, mtime), the protocol
  values and the detector's sha256, in ``cache_dir('stats')`` ($SFV_BENCH_CACHE/stats), written
  to a temporary file and renamed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .fsutil import UserError, atomic_path, cache_dir, sha256_json

STATS_FORMAT = "sfv-bench-featurestats-v1"


class FeatureStats:
    """Float64 running sums of D-dimensional features: ``n``, ``sum`` (D,), ``sum_outer`` (D, D)."""

    def __init__(self, dim: int):
        self.dim = int(dim)
        self.n = 0
        self.sum = np.zeros(self.dim, np.float64)
        self.sum_outer = np.zeros((self.dim, self.dim), np.float64)
        self.metadata: dict = {}

    def append(self, feats) -> "FeatureStats":
        x = np.asarray(feats, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected features (B, {self.dim}), got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("features contain NaN or inf")
        self.n += x.shape[0]
        self.sum += x.sum(axis=0)
        self.sum_outer += x.T @ x
        return self

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """Add another part's sums into this one (in place); returns self."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {other.dim} into {self.dim}")
        self.n += other.n
        self.sum += other.sum
        self.sum_outer += other.sum_outer
        return self

    @classmethod
    def combine(cls, parts: Iterable["FeatureStats"]) -> "FeatureStats":
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to combine")
        out = cls(parts[0].dim)
        for p in parts:
            out.merge(p)
        return out

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


def compute_stats(detector, videos: Iterable, batch_size: int = 8, progress=None,
                  total: int | None = None) -> FeatureStats:
    """Features of uint8 (T, H, W, 3) videos, batched (a batch is flushed when the shape changes).

    ``progress``: None for no bar, or a description string for a tqdm bar.
    """
    stats = FeatureStats(detector.feature_dim)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, desc=str(progress), unit="clip")
    batch: list = []

    def flush():
        if batch:
            stats.append(detector.features(np.stack(batch)))
            if bar is not None:
                bar.update(len(batch))
            batch.clear()

    try:
        for v in videos:
            v = np.asarray(v)
            if batch and v.shape != batch[0].shape:
                flush()
            batch.append(v)
            if len(batch) >= batch_size:
                flush()
        flush()
    finally:
        if bar is not None:
            bar.close()
    return stats


# ------------------------------------------------------------------------------ cached statistics

def _file_entry(f) -> str:
    p = Path(f)
    try:
        st = p.stat()
    except OSError:
        return str(f)
    return f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def stats_cache_key(files: list, protocol: dict, detector_sha256: str) -> str:
    """sha256 of: each file (resolved path, size, mtime if it exists, else the string as given),
    every protocol value, the detector's sha256, and the statistics format version."""
    return sha256_json({"format": STATS_FORMAT, "files": [_file_entry(f) for f in files],
                        "protocol": protocol, "detector_sha256": detector_sha256})


def cached_real_stats(key_parts: dict, make_videos: Callable[[], Iterable], detector, batch_size: int = 8,
                      name_prefix: str = "real", progress=None) -> tuple[FeatureStats, bool, Path]:
    """Real statistics from the cache, or computed from ``make_videos()`` and cached atomically.

    ``key_parts``: ``files`` (list of paths) plus any protocol values; the detector's sha256 is added.
    Returns (stats, hit, path). On a hit ``make_videos`` is never called (no video is decoded).
    """
    parts = dict(key_parts)
    files = list(parts.pop("files", []))
    key = stats_cache_key(files, parts, detector.sha256)
    path = cache_dir("stats") / f"{name_prefix}-{key[:24]}.npz"
    if path.is_file():
        try:
            stats = FeatureStats.load(path)
            if stats.metadata.get("key") == key:
                return stats, True, path
        except UserError:
            pass  # unreadable cache entry: recompute and replace it
    stats = compute_stats(detector, make_videos(), batch_size=batch_size, progress=progress, total=len(files) or None)
    stats.metadata = {"key": key, "protocol": parts, "num_files": len(files), "n": stats.n,
                      "detector": detector.label, "detector_sha256": detector.sha256}
    stats.save(path)
    return stats, False, path


# ---------------------------------------------------------------------------------------- CLI

def _parse_size(size: str | None):
    if size is None:
        return None
    try:
        w, h = (int(v) for v in size.lower().split("x"))
        if w <= 0 or h <= 0:
            raise ValueError
    except ValueError:
        raise UserError(f"--size must be WxH with positive integers (e.g. 320x240), got {size!r}") from None
    return w, h


def _video_files(folder: Path, role: str) -> list[Path]:
    from .videoio import list_videos
    if not folder.exists():
        raise UserError(f"{role} folder not found: {folder}")
    if not folder.is_dir():
        raise UserError(f"{role} must be a folder of videos: {folder}")
    files = list_videos(folder)
    if not files:
        raise UserError(f"{role} folder has no videos (avi/mp4/mkv/mov/webm/npy/npz): {folder}")
    return files


def _clips(files: list[Path], num_frames: int | None, size):
    """Yield uint8 (T, H, W, 3) clips: the first ``num_frames`` frames, resized to ``size``."""
    from .detectors import MIN_FRAMES
    from .transforms import resize_frames
    from .videoio import VideoDecodeError, read_video, video_info

    need = max(num_frames or MIN_FRAMES, MIN_FRAMES)
    for f in files:
        try:
            n = video_info(f)[0]
            if n < need:
                raise UserError(f"{f}: {n} frames, fewer than the {need} needed "
                                f"(I3D needs >= {MIN_FRAMES}; lower --num-frames or drop the video)")
            clip = read_video(f, range(num_frames) if num_frames else None)
        except VideoDecodeError as e:
            raise UserError(f"cannot decode {e}") from None
        yield clip if size is None else resize_frames(clip, *size)


def cli_fvd(args) -> int:
    """`sfv-bench fvd REAL FAKE`: FVD between two folders, or a statistics .npz and a folder."""
    from .detectors import MIN_FRAMES, load_detector

    size = _parse_size(args.size)
    if args.num_frames is not None and args.num_frames < MIN_FRAMES:
        raise UserError(f"--num-frames must be >= {MIN_FRAMES} (I3D's minimum), got {args.num_frames}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    real_path, fake_path = Path(args.real), Path(args.fake)
    fake_files = _video_files(fake_path, "FAKE")
    if not real_path.exists():
        raise UserError(f"REAL not found: {real_path}")
    detector = load_detector(args.detector, device=args.device)
    protocol = {"num_frames": args.num_frames, "size": list(size) if size else None,
                "detector_input": "224x224 bilinear, 2x/255-1"}

    if real_path.is_file():
        real = FeatureStats.load(real_path)
        got = real.metadata.get("detector_sha256")
        if got and got != detector.sha256:
            raise UserError(f"{real_path} was computed with detector sha256 {got[:12]} "
                            f"({real.metadata.get('detector')}), not {detector.sha256[:12]}; use the same --detector")
        run_proto = real.metadata.get("protocol") or {}
        if "score_width" in run_proto:  # real statistics cached by `sfv-bench run`: adopt its clip geometry
            want_frames = run_proto["num_frames"]
            want_size = (run_proto["score_width"], run_proto["score_height"])
            if (args.num_frames not in (None, want_frames)) or (size not in (None, want_size)):
                raise UserError(f"{real_path} holds {want_frames}-frame clips at {want_size[0]}x{want_size[1]} "
                                f"({real.metadata.get('detector', '')}); match --num-frames/--size or drop them")
            args.num_frames, size = want_frames, want_size
        elif "protocol" in real.metadata and real.metadata["protocol"] != protocol:
            raise UserError(f"{real_path} was computed with {real.metadata['protocol']}, not {protocol}; "
                            f"match --num-frames/--size")
        print(f"real statistics: {real_path} (N={real.n})", file=sys.stderr)
    else:
        real_files = _video_files(real_path, "REAL")
        real, hit, cpath = cached_real_stats(
            {"files": real_files, **protocol}, lambda: _clips(real_files, args.num_frames, size),
            detector, batch_size=args.batch_size, progress="real videos")
        print(f"real statistics {'read from' if hit else 'written to'} cache: {cpath}", file=sys.stderr)

    fake = compute_stats(detector, _clips(fake_files, args.num_frames, size), batch_size=args.batch_size,
                         progress="fake videos", total=len(fake_files))
    if real.n < 2 or fake.n < 2:
        raise UserError(f"FVD needs at least 2 videos on each side (N_real={real.n}, N_fake={fake.n})")
    res = fvd_from_stats(real, fake, args.covariance)
    frames = f"frames {args.num_frames or 'all'}"
    geometry = f"at {size[0]}x{size[1]}" if size else "at native size"
    print(f"FVD = {res['fvd']:.2f}  (N_real={res['n_real']}, N_fake={res['n_fake']}, detector: {detector.label}, "
          f"covariance: {res['covariance']}, {frames} {geometry})")
    return 0
