"""benchmarks/peak_rss.py: the one resident-memory helper of the benchmarks that report a peak RSS."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from peak_rss import peak_rss_bytes, reset_peak_rss, rss_bytes  # noqa: E402


def test_the_peak_covers_an_allocation_and_children_are_counted_apart():
    reset_peak_rss()                                       # where the kernel honours it: the peak restarts here
    before = rss_bytes()
    block = np.ones(64 * 2**20, np.uint8)                  # 64 MiB, touched
    assert peak_rss_bytes() >= before + 60 * 2**20 > 0
    del block
    assert 0 <= peak_rss_bytes(children=True)             # the finished children's peak, not this process's
