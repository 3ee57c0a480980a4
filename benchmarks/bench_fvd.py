"""FVD throughput figures (prints; not a test).

* toy detector feature extraction on CPU (clips/s), uint8 clips 14 x 240 x 320 -> 224x224, batch 8;
* real-size I3D (random weights, the TATS/cd-fvd architecture) on ``--device``;
* one Fréchet distance at D = 400 (float64, eigenvalue form) and scipy's sqrtm form for reference.

Usage: python benchmarks/bench_fvd.py [--device cuda] [--clips 32] [--threads N]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sfv_fvd.detectors import Detector, load_detector  # noqa: E402
from sfv_fvd.i3d import InceptionI3d  # noqa: E402
from sfv_fvd.stats import frechet_distance  # noqa: E402


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def clips_per_second(det: Detector, n_clips: int, batch: int, frames: int) -> float:
    rng = np.random.default_rng(0)
    videos = rng.integers(0, 256, size=(batch, frames, 240, 320, 3), dtype=np.uint8)
    det.features(videos)                           # warm-up
    _sync(det.device)
    t0 = time.perf_counter()
    done = 0
    while done < n_clips:
        det.features(videos)
        done += batch
    _sync(det.device)
    return done / (time.perf_counter() - t0)


def frechet_seconds(d: int = 400, repeat: int = 5) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2 * d, d)), rng.normal(size=(2 * d, d)) * 1.2
    s1, s2 = np.cov(a.T), np.cov(b.T)
    mu1, mu2 = a.mean(0), b.mean(0)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        frechet_distance(mu1, s1, mu2, s2)
        times.append(time.perf_counter() - t0)
    import scipy.linalg
    t0 = time.perf_counter()
    scipy.linalg.sqrtm(s1 @ s2)
    return min(times), time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="device for the real-size I3D (toy always runs on CPU)")
    p.add_argument("--clips", type=int, default=32, help="clips timed per measurement")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=14)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, dtype float32 detector / float64 stats")
    print(f"clips: uint8 {args.frames}x240x320 -> 224x224, batch {args.batch}")

    toy = load_detector("toy", device="cpu")
    print(f"toy detector (I3D width 1/16) on cpu: {clips_per_second(toy, args.clips, args.batch, args.frames):.1f} clips/s")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        full = Detector(InceptionI3d(), "i3d400", "random-init I3D-400", "0" * 64, device=args.device,
                        label="real-size I3D, random weights")
    n = max(args.batch, args.clips // 4) if torch.device(args.device).type == "cpu" else args.clips
    print(f"real-size I3D (random weights) on {args.device}: "
          f"{clips_per_second(full, n, args.batch, args.frames):.2f} clips/s")

    ours, scipy_s = frechet_seconds()
    print(f"Fréchet distance D=400 (eigh form, float64): {ours * 1e3:.1f} ms  (scipy sqrtm form: {scipy_s * 1e3:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
