"""Shared fixtures. Every test session gets its own cache folder and never touches the network."""
from __future__ import annotations

import os
import tempfile

import pytest

_SESSION_CACHE = tempfile.mkdtemp(prefix="sfv-bench-test-cache-")
os.environ["SFV_BENCH_CACHE"] = _SESSION_CACHE
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A small synthetic dataset in UCF-101's layout, made once per test session (read-only for tests)."""
    from bench.run import default_dataset_root
    from bench.synthetic import make_synthetic

    return make_synthetic(default_dataset_root(), seed=0)  # the folder `sfv-bench run` uses too
