"""Do rows making the same UNet passes agree? The run's timing pass on the mini world's rows, as `sfv-bench run`
makes it (row after row, one thread), printing per row the measured UNet time per video and the headline
(calls x the one time of that pass), each as a ratio to onestep:1 (same-run ratios, never absolute times).

    python benchmarks/latency_agreement.py [--specs onestep:1,sfv:1,ufogen:1,ladd:1,lcm:4,lcm:8] [--videos 3]

Expected: headline ratios 1.00 for the one-step rows and the calls for lcm:N (by construction: one pass time
each); the measured ratios show how far apart rows timed one after the other come out on this machine.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specs", default="onestep:1,sfv:1,ufogen:1,ladd:1,lcm:4,lcm:8")
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import numpy as np
    import torch

    from bench.generate import PassTimes, time_method
    from bench.settings import _mini_unets
    from methods.registry import get_method, parse_specs
    from sfv_core.protocol import WORLDS, Protocol

    world = WORLDS["mini"]
    options: dict = {}
    _mini_unets(world, options)                          # the shipped distilled UNets as the methods' defaults
    p = Protocol(**world.protocol)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (p.gen_height, p.gen_width, 3), dtype=np.uint8) for _ in range(args.videos)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        passes = PassTimes(Path(tmp))
        for spec in parse_specs(args.specs):
            m = get_method(spec, **options.get(spec.name, {})).load(world.stack, "cpu", torch.float32)
            lat = time_method(m, images, seeds=list(range(args.videos)), conditions=p.conditions(), device="cpu",
                              threads=args.threads, passes=passes)
            calls = m.unet_calls_per_video()["calls"]
            rows.append((spec.key, calls, lat["median_s"], calls * passes.lookup(lat["pass_key"])["median_s"]))
            m.unload()
    base = next((r for r in rows if r[0] == "onestep:1"), rows[0])
    print(f"CPU, float32, {args.threads} thread(s), {args.videos} videos per row; ratios to {base[0]} "
          f"(measured {base[2]:.4f} s, pass {base[3]:.4f} s)")
    print(f"{'spec':<12}{'calls':>6}{'measured':>10}{'calls x pass':>14}")
    for key, calls, measured, headline in rows:
        print(f"{key:<12}{calls:>6}{measured / base[2]:>10.2f}{headline / base[3]:>14.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
