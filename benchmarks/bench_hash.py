"""What re-hashing weight files at every run costs (``sfv_core.fsutil.sha256_cached``: read again in every
process; size and mtime cannot show bit rot).

    python benchmarks/bench_hash.py                    # the mini world's files, then a 6 GB sparse file
    python benchmarks/bench_hash.py --size-gb 6 --real # also a 6 GB file of real (random) bytes

The sparse file reads as zeros without touching the disk: its figure is the CPU cost of sha256 (one
thread, hashlib/OpenSSL). ``--real`` writes random bytes first; read back right after writing it comes
from the page cache when memory allows (a cold read runs at the disk's speed instead). Prints MB/s,
the CPU and the seconds per file set.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from sfv_core import fsutil
from sfv_core.env import cpu_name


def _timed(paths) -> tuple[float, int]:
    fsutil._HASHED.clear()                     # as a new process: nothing known
    size = sum(Path(p).stat().st_size for p in paths)
    start = time.perf_counter()
    for p in paths:
        fsutil.sha256_cached(p)
    return time.perf_counter() - start, size


def _report(label: str, seconds: float, size: int) -> None:
    print(f"{label:<42} {size / 1e6:10.1f} MB  {seconds:8.3f} s  {size / 1e6 / seconds:8.0f} MB/s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gb", type=float, default=6.0, help="size of the large file (default 6)")
    ap.add_argument("--real", action="store_true", help="also hash a file of random bytes of that size")
    args = ap.parse_args()
    print(f"CPU {cpu_name()} ({platform.machine()}), one thread, Python {platform.python_version()}")
    from methods.models.mini import manifest, mini_dir

    files = [mini_dir() / rel for rel in manifest()]
    _report(f"mini world ({len(files)} files)", *_timed(files))
    size = int(args.size_gb * (1 << 30))
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        sparse = Path(tmp) / "sparse.bin"
        with open(sparse, "wb") as f:
            f.truncate(size)
        _report(f"{args.size_gb:g} GB sparse file (sha256 CPU cost)", *_timed([sparse]))
        sparse.unlink()
        if args.real:
            real = Path(tmp) / "real.bin"
            block = os.urandom(64 << 20)
            with open(real, "wb") as f:
                for _ in range(size // len(block)):
                    f.write(block)
            _report(f"{args.size_gb:g} GB written file (page cache if it fits)", *_timed([real]))


if __name__ == "__main__":
    main()
