"""Does FVD rise with each degradation's severity? (prints; not a test)

On real TEST clips of the mini world's synthetic dataset (the 32x32 protocol, balanced selection):
FVD of N clips ("real") against N other clips, undegraded (severity 0: the noise floor) and at three
increasing severities of Gaussian blur (sigma, px), additive noise (std of 255), temporal shuffle
(fraction of frames misplaced) and frozen video (trailing frames replaced by frame 0), each with its
95% interval (``fvd_interval``, generated side). A degradation is monotonic when floor < s1 < s2 < s3.
The degradations are ``sfv_train.classifier``'s (one home); the severities are chosen between the
round values, but the mini detector is trained on continuous ranges that contain them, so for it the
check is partly by construction (see that module's doc).

Usage: python benchmarks/bench_detector_sensitivity.py DETECTOR [--data ROOT] [--n 64] [--json OUT]
DETECTOR: a folder with detector.json (a mini detector export), 'mini' (the shipped one), 'toy', or a
weight file. ROOT defaults to the mini world's dataset in the cache (made once).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sfv_fvd.detectors import load_detector, load_mini_detector  # noqa: E402
from sfv_fvd.features import compute_stats  # noqa: E402
from sfv_fvd.stats import fvd_from_stats, fvd_interval  # noqa: E402
from sfv_core.data.synthetic import default_dataset_root, make_synthetic  # noqa: E402
from sfv_core.data.ucf101 import UCF101, load_sample, select_videos  # noqa: E402
from sfv_core.protocol import WORLDS, Protocol  # noqa: E402
from sfv_train.classifier import APPLY  # noqa: E402

SEVERITIES = {"blur": [0.7, 1.3, 2.2], "noise": [6.0, 13.0, 26.0], "shuffle": [0.3, 0.6, 0.9], "frozen": [3, 7, 11]}
UNITS = {"blur": "sigma px", "noise": "std /255", "shuffle": "frac moved", "frozen": "frames"}


def real_test_clips(root: Path, n: int) -> list[np.ndarray]:
    p = Protocol(**{**WORLDS["mini"].protocol, "num_videos": n})
    refs = select_videos(UCF101(root), p)
    if len(refs) < n:
        raise SystemExit(f"{root}: only {len(refs)} test videos, need {n} (2 x --n)")
    return [load_sample(r, p).real_clip for r in refs]


def degrade(clips: list[np.ndarray], name: str, level: float, seed: int) -> list[np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    return [APPLY[name](torch.from_numpy(np.array(c)), level, gen).numpy() for c in clips]


def measure(det, real: list, other: list, batch: int = 16) -> dict:
    ref = compute_stats(det, real, batch)
    rows = {"floor": _fvd(det, ref, other, batch)}
    for i, (name, levels) in enumerate(SEVERITIES.items()):
        res = [_fvd(det, ref, degrade(other, name, lv, 1000 * i + j), batch) for j, lv in enumerate(levels)]
        values = [rows["floor"]["fvd"]] + [r["fvd"] for r in res]
        rows[name] = {"severities": levels, "unit": UNITS[name], "fvd": [r["fvd"] for r in res],
                      "interval": [r["interval"] for r in res],
                      "monotonic": bool(all(a < b for a, b in zip(values, values[1:])))}
    return rows


def _fvd(det, ref, clips, batch) -> dict:
    st = compute_stats(det, clips, batch, keep=True)
    return {"fvd": fvd_from_stats(ref, st)["fvd"], "interval": list(fvd_interval(ref, np.concatenate(st.features)))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("detector", help="folder with detector.json, 'mini', 'toy' or a weight file")
    ap.add_argument("--data", help="synthetic dataset root (default: the mini world's, in the cache)")
    ap.add_argument("--n", type=int, default=64, help="clips per side (default 64)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.data:
        root = Path(a.data)
    else:
        root = make_synthetic(default_dataset_root(**WORLDS["mini"].dataset), **WORLDS["mini"].dataset)
    path = Path(a.detector)
    det = load_mini_detector(path, a.device) if path.is_dir() else load_detector(a.detector, a.device)
    t0 = time.perf_counter()
    clips = real_test_clips(root, 2 * a.n)
    rows = measure(det, clips[:a.n], clips[a.n:])
    seconds = time.perf_counter() - t0
    f = rows["floor"]
    print(f"{det.label} (sha256 {det.sha256[:12]}, D = {det.feature_dim}); N = {a.n} vs {a.n} real test clips "
          f"of {root}")
    print(f"{'':9}{'severity':>22}  {'FVD':>9}  95% interval")
    print(f"{'floor':9}{'0':>22}  {f['fvd']:9.3f}  [{f['interval'][0]:.3f}, {f['interval'][1]:.3f}]")
    for name in SEVERITIES:
        r = rows[name]
        for lv, v, (lo, hi) in zip(r["severities"], r["fvd"], r["interval"]):
            print(f"{name:9}{f'{lv:g} {UNITS[name]}':>22}  {v:9.3f}  [{lo:.3f}, {hi:.3f}]")
        print(f"{'':9}{'monotonic:':>22}  {'yes' if r['monotonic'] else 'NO'}")
    ok = all(rows[n]["monotonic"] for n in SEVERITIES)
    print(f"all monotonic: {'yes' if ok else 'NO'} ({seconds:.0f} s)")
    if a.json:
        out = {"detector": det.label, "sha256": det.sha256, "feature_dim": det.feature_dim, "n": a.n,
               "data": str(root), "all_monotonic": ok, "seconds": seconds, **rows}
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
