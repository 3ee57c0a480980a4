"""sfv-bench: the harness and the command line, and a small library API.

    from bench import compute_fvd, generate_video, get_method, load_detector

The names are imported on first use (module ``__getattr__``), so ``import bench`` and the CLI
(``bench.cli``) stay torch-free.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "compute_fvd": "bench.api",
    "generate_video": "bench.api",
    "load_detector": "sfv_fvd.detectors",
    "get_method": "methods.registry",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'bench' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
