"""Shared fixtures. Every test session gets its own cache folder and never touches the network."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))   # tests/helpers.py, tests/reference/

_SESSION_CACHE = tempfile.mkdtemp(prefix="sfv-bench-test-cache-")
os.environ["SFV_BENCH_CACHE"] = _SESSION_CACHE
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")
# numpy's OpenBLAS spins in sched_yield while it waits for its second thread; beside the background
# jobs (below) that thread rarely gets a core: a 400x400 sqrtm took 8 s instead of 0.2 s, mostly
# kernel time. One BLAS thread, as torch has (one_thread); read when numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from sfv_core.env import keep_freed_memory  # noqa: E402

keep_freed_memory()      # as `sfv-bench run` does: freed activations stay in the heap (no page-fault churn)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Every test runs torch with one intra-op thread: the tiny models are faster so (thread start-up
    dominates), a busy 2-core machine cannot slow them by oversubscription, and float32 results do
    not depend on the thread count (the multi-process test compares with single-process runs)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A small synthetic dataset in UCF-101's layout, made once per test session (read-only for tests)."""
    from sfv_core.data.synthetic import default_dataset_root, make_synthetic

    return make_synthetic(default_dataset_root(), seed=0)  # the folder `sfv-bench run` uses too


_BACKGROUND = []


def pytest_collection_modifyitems(session, config, items):
    """Tests of a module with ``start_background()`` run last, so its job overlaps the whole suite."""
    items.sort(key=lambda item: hasattr(getattr(item, "module", None), "start_background"))


def pytest_collection_finish(session):
    """A selected test module with ``start_background()`` gets it called once, before any test runs (a
    long subprocess, started at nice 10, that overlaps the other tests on the core their one thread leaves
    idle), and ``stop_background()`` at the session's end."""
    for item in session.items:
        mod = getattr(item, "module", None)
        if mod is not None and hasattr(mod, "start_background") and mod not in _BACKGROUND:
            _BACKGROUND.append(mod)
            mod.start_background()


def pytest_sessionfinish(session, exitstatus):
    for mod in _BACKGROUND:
        mod.stop_background()
