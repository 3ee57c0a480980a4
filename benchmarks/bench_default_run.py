"""Time the embedded default `sfv-bench run` (the mini world): cold, warm cache, and a resume.

    python benchmarks/bench_default_run.py [--threads N] [-- extra sfv-bench run args]

Cold: a fresh cache folder (synthetic dataset and real statistics made anew) and a fresh run folder.
Warm cache: the same cache, a fresh run folder (every video generated, scored and timed again: the
figure the target is about). Resume: the warm run's command again (every sample and the real statistics
are found, so it only rescores and rewrites the tables). Prints wall and CPU seconds of each; the
target is <= 60 s warm on 2 CPU cores, never more than 120 s. A figure, not a test.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _timed(cmd, env) -> tuple[float, float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, rc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="OMP/torch threads (default: torch's own)")
    p.add_argument("extra", nargs="*", help="extra `sfv-bench run` arguments (after --)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sfv-bench-default-run-") as tmp:
        env = dict(os.environ, SFV_BENCH_CACHE=str(Path(tmp) / "cache"), TQDM_DISABLE="1")
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        def cmd(run):
            return [sys.executable, "-m", "bench", "run", "--out", str(Path(tmp) / run), *args.extra]

        print(f"cores: {os.cpu_count()}, threads: {args.threads or 'torch default'}, load before: "
              f"{os.getloadavg()[0]:.2f}, command: sfv-bench run {' '.join(args.extra)}", flush=True)
        for label, run in (("cold", "cold"), ("warm cache", "warm"), ("resume", "warm")):
            wall, cpu, rc = _timed(cmd(run), env)
            print(f"{label:>14}: {wall:6.1f} s wall, {cpu:6.1f} s CPU, exit {rc}", flush=True)
            if rc != 0:
                return rc
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
