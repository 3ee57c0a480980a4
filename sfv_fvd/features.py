"""Detector features of videos, batched, and the ONE cache of real statistics.

``compute_stats`` is the only feature-batching loop: videos (uint8 (T, H, W, 3)) go to the detector
in batches (a batch is flushed when the shape changes) and into float64 running sums.

``cached_stats`` is the only code that names, checks and writes a statistics cache file (StyleGAN-V's
``compute_feature_stats_for_dataset`` rule): ``$SFV_BENCH_CACHE/stats/<label>-<key>.npz``, key = sha256
of the file list (resolved path, size, mtime), every protocol value, the detector's sha256 and the
statistics format; written atomically by the main process. ``sfv-bench run`` and ``sfv-bench fvd``
both call it, so the same real videos under the same rules are decoded once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from sfv_core.errors import UserError
from sfv_core.fsutil import cache_dir, file_signature, sha256_json

from .stats import STATS_FORMAT, FeatureStats


def compute_stats(detector, videos: Iterable, batch_size: int = 8, progress=None,
                  total: int | None = None, keep: bool = False) -> FeatureStats:
    """Features of uint8 (T, H, W, 3) videos, batched (a batch is flushed when the shape changes).

    ``progress``: None for no bar, or a description string for a tqdm bar. ``keep``: also keep the
    feature rows (``stats.features``), for the FVD interval.
    """
    stats = FeatureStats(detector.feature_dim, keep=keep)
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

# What the metadata's "used" list names: VideoRef.sample_id, "Class/v_Class_g01_c01" (entries that
# named the bare file stem are recomputed, not misread)
USED_IDS = "class/stem"


def _file_entry(f) -> str:
    try:
        return "|".join(map(str, file_signature(f)))
    except OSError:
        return str(f)


def stats_cache_key(files: list, protocol: dict, detector_sha256: str) -> str:
    """sha256 of: each file (resolved path, size, mtime if it exists, else the string as given),
    every protocol value, the detector's sha256, the statistics format version and the form of the ids."""
    return sha256_json({"format": STATS_FORMAT, "files": [_file_entry(f) for f in files],
                        "protocol": protocol, "detector_sha256": detector_sha256, "ids": USED_IDS})


def cached_stats(files: list, protocol: dict, detector, compute: Callable[[], tuple[FeatureStats, dict]],
                 label: str = "real", dist=None) -> tuple[FeatureStats, bool, Path]:
    """Statistics from the cache when every input matches, else ``compute()`` and cache them.

    ``compute()`` returns (statistics over the whole set, i.e. merged over processes, metadata) and
    is called only on a miss (no video is decoded on a hit). The main process writes the file;
    with ``dist`` every process waits for it. Returns (stats, hit, path); ``stats.metadata`` holds
    the metadata plus key, protocol, n, detector label and sha256."""
    key = stats_cache_key(files, protocol, detector.sha256)
    path = cache_dir("stats") / f"{label}-{key[:24]}.npz"
    if path.is_file():
        try:
            stats = FeatureStats.load(path)
            if stats.metadata.get("key") == key:
                return stats, True, path
        except UserError:
            pass  # unreadable cache entry: recompute and replace it
    stats, meta = compute()
    stats.metadata = {**meta, "key": key, "protocol": protocol, "num_files": len(files), "n": stats.n,
                      "detector": detector.label, "detector_sha256": detector.sha256,
                      "detector_spec": getattr(detector, "spec", None)}
    if dist is None or dist.main:
        stats.save(path)
    if dist is not None:
        dist.barrier()
    return stats, False, path
