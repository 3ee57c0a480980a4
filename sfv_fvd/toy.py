"""The toy FVD detector: a seeded random-init InceptionI3d at 1/16 width (the tiny world's and the tests').

``toy_model(seed)`` builds it (a temporal-derivative first layer, BatchNorm calibrated on seeded
noise; see ``_calibrated``) once per machine: the calibration (a float64 pass, a few CPU seconds) is
kept in ``cache_dir('toy-detector')`` as safetensors, keyed by the seed, the torch version and the
sha256 of this file and of i3d.py (any change to how it is made makes a new entry). A cached file is
used only when its tensors hash to the sha256 written beside them; anything else is rebuilt.
Its numbers are labelled "toy detector" everywhere and are NOT comparable with any published FVD.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from sfv_core.fsutil import atomic_path, cache_dir

from . import i3d
from .i3d import BN_MOMENTUM, DETECTOR_SIZE, FEATURE_DIM, InceptionI3d

TOY_WIDTH = 1 / 16
TOY_LABEL = "toy detector (random-init I3D, seed {seed}): not comparable with published FVD"


def state_dict_sha256(model: torch.nn.Module) -> str:
    """sha256 over a model's state dict (names, shapes, bytes): what keys every cache made with it."""
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(str(tuple(value.shape)).encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _calibration_clips(seed: int, n: int = 4, frames: int = 14) -> torch.Tensor:
    """Seeded smooth noise in [-1, 1] (three octaves, coarse ones strongest), (n, 3, T, 224, 224)."""
    g = torch.Generator().manual_seed(seed)
    size = (frames, DETECTOR_SIZE, DETECTOR_SIZE)
    x = torch.zeros(n, 3, *size)
    for amp, (t, s) in ((1.0, (4, 7)), (0.5, (7, 28)), (0.25, (14, 112))):
        coarse = torch.rand(n, 3, t, s, s, generator=g) * 2 - 1
        x += amp * F.interpolate(coarse, size=size, mode="trilinear", align_corners=False)
    return (x / 1.75).clamp_(-1, 1)


def _architecture(seed: int) -> InceptionI3d:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return InceptionI3d(num_classes=FEATURE_DIM, width_mult=TOY_WIDTH)


def _finish(model: InceptionI3d) -> InceptionI3d:
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)):
        bn.momentum = BN_MOMENTUM
    model.eval()
    model.requires_grad_(False)
    return model


def _calibrated(seed: int) -> InceptionI3d:
    """The toy I3D built from its seed. Two changes to a plain random init make its FVD behave like one
    (checked on the synthetic dataset, seeds 0-3, 35 vs 35 clips; tests/sfv_fvd/test_fvd.py):

    * Conv3d_1a_7x7: each filter is its seeded random 7x7 spatial pattern (per colour) times the
      fixed odd temporal profile (-3..3)/||.||, i.e. a temporal-derivative (motion-energy) front
      end, as trained video networks learn. A random 7-tap temporal profile has a flat expected
      spectrum, so a plain random I3D hardly sees frame order: shuffling frames moved its features
      by ~7% of the between-video spread (vs ~45% with this front end) and "real vs shuffled"
      fell below "real vs real" for some seeds. Static content still enters through moving
      edges and the clip's zero-padded ends.
    * BatchNorm: with default running statistics (mean 0, var 1) activations drift in scale layer
      by layer, so every BN's running mean/var is re-estimated (cumulative average,
      ``momentum=None``) from one train-mode pass over seeded smooth-noise clips, computed in
      float64 and rounded to float32, so the weights (and their sha256, which keys the statistics
      cache) are the same with any thread count.
    """
    model = _architecture(seed)
    with torch.no_grad():
        w = model.Conv3d_1a_7x7.conv3d.weight                    # (out, 3, 7, 7, 7)
        profile = torch.arange(-3.0, 4.0)
        spatial = w.mean(dim=2, keepdim=True) * 7 ** 0.5
        w.copy_(spatial * (profile / profile.norm()).view(1, 1, 7, 1, 1))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.double().train()        # float64 sums: the statistics do not depend on the thread count
    with torch.no_grad():
        model(_calibration_clips(seed).double())
    model.float()
    for bn in bns:
        bn.num_batches_tracked.zero_()
    return _finish(model)


def cache_path(seed: int) -> Path:
    """Where ``toy_model(seed)`` keeps its weights: keyed by seed, torch version and this code."""
    code = hashlib.sha256(Path(__file__).read_bytes() + Path(i3d.__file__).read_bytes()).hexdigest()[:12]
    return cache_dir("toy-detector") / f"toy-i3d-seed{seed}-torch{torch.__version__}-{code}.safetensors"


def _read(path: Path, seed: int) -> tuple[InceptionI3d, str] | None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), "pt") as f:
            want = (f.metadata() or {}).get("sha256")
        model = _architecture(seed)
        model.load_state_dict(load_file(str(path)), strict=True)
    except Exception:  # noqa: BLE001 - unreadable or foreign file: rebuilt
        return None
    digest = state_dict_sha256(model)
    return (_finish(model), digest) if digest == want else None


@lru_cache(maxsize=4)
def toy_model(seed: int) -> tuple[InceptionI3d, str]:
    """(the toy I3D for ``seed``, sha256 of its state dict), from the cache when it holds it intact.
    Deterministic for a given seed and torch version; the sha256 keys every cache that depends on it."""
    from safetensors.torch import save_file

    path = cache_path(seed)
    if path.is_file() and (hit := _read(path, seed)) is not None:
        return hit
    model = _calibrated(seed)
    digest = state_dict_sha256(model)
    try:
        with atomic_path(path, ".safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata={"sha256": digest})
    except OSError:
        pass                       # a read-only or full cache: built again next time, nothing lost
    return model, digest
