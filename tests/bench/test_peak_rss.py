"""benchmarks/peak_rss.py: the one resident-memory helper of the benchmarks that report a peak RSS."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from peak_rss import peak_rss_bytes  # noqa: E402

BLOCK = 128 * 2**20
CHILD = (f"import sys; sys.path.insert(0, {str(BENCHMARKS)!r}); import numpy as np; from peak_rss import *; "
         f"before = rss_bytes(); block = np.ones({BLOCK}, np.uint8); print(before, peak_rss_bytes())")


def test_the_peak_covers_an_allocation_and_a_finished_child_counts():
    """In a fresh process (a long-lived one may reuse freed pages, and not every kernel resets the peak)."""
    before, peak = map(int, subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                                           check=True).stdout.split())
    assert peak >= before + BLOCK - 4 * 2**20
    assert peak_rss_bytes(children=True) >= BLOCK              # the largest finished child's peak
