"""A process's resident memory, for the benchmarks that report it (Linux /proc, else ``getrusage``).

``reset_peak_rss()`` restarts the high-water mark (so a peak belongs to one piece of work),
``peak_rss_bytes()`` reads it, ``rss_bytes()`` reads the current resident set.
"""
from __future__ import annotations

import re
import resource
from pathlib import Path

STATUS = Path("/proc/self/status")


def _status_bytes(key: str) -> int | None:
    """A ``kB`` field of /proc/self/status in bytes, or None where /proc lacks it."""
    try:
        found = re.search(key + r":\s+(\d+)", STATUS.read_text())
    except OSError:
        return None
    return int(found.group(1)) * 1024 if found else None


def reset_peak_rss() -> bool:
    """Restart the kernel's RSS high-water mark (Linux >= 4.0); False where it cannot be."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes(children: bool = False) -> int:
    """The peak resident set: this process's since the last ``reset_peak_rss`` (VmHWM; getrusage's lifetime
    maximum where /proc has none), or with ``children`` the largest of its finished child processes'."""
    if not children:
        peak = _status_bytes("VmHWM")
        if peak is not None:
            return peak
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return int(usage.ru_maxrss) * 1024                     # Linux: KiB


def rss_bytes() -> int:
    """The current resident set (VmRSS; 0 where /proc has none)."""
    return _status_bytes("VmRSS") or 0
