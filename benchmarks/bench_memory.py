"""Memory of sfv-train's step: the estimate (``sfv_train.memory``, fake tensors) at the paper's sizes,
and the estimate checked against measured peaks at sizes that run on this CPU.

    python benchmarks/bench_memory.py estimates    # 768x448 and 1024x576: every R1, checkpointing on/off
    python benchmarks/bench_memory.py validate     # tiny, mini, full-size at 8x8 and 16x16 latents

Each case is one subprocess (one thread); results are added to results/memory/{estimates,validation}.json
as they finish (a rerun skips finished cases) and results/memory/memory.md is rewritten from both.

Measured, two ways, in the same process as the run: (1) live tensor bytes counted as the step runs
on real tensors (``sfv_train.memory.measure``: the same counter as the estimate, on real data: what
``torch.cuda.max_memory_allocated`` counts on a GPU); (2) the process's peak resident set (VmHWM after
``/proc/self/clear_refs``) minus its resident set before the models are built, with glibc told to
return every block over 64 KiB to the system when freed (MALLOC_MMAP_THRESHOLD_), so the RSS follows
live memory: an independent check that the counter misses nothing large (the small cases run the
step once before the baseline, so that code pages and allocator arenas are already there). The full-size cases keep
the weights in bfloat16 (float32 would need ~30 GB: more than this machine has); the estimate is
asked for the same.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from peak_rss import peak_rss_bytes, reset_peak_rss, rss_bytes

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "memory"
GIB = 1024 ** 3
SIZES = ((768, 448), (1024, 576))
# name -> (TrainConfig overrides, weights dtype): sizes that run here
VALIDATE = {
    "tiny 128x128": ({"stack": "tiny", "width": 128, "height": 128}, "float32"),
    "mini 32x32": ({"stack": "mini"}, "float32"),
    "svd 64x64 (latent 8x8)": ({"stack": "svd", "width": 64, "height": 64}, "bfloat16"),
    "svd 128x128 (latent 16x16)": ({"stack": "svd", "width": 128, "height": 128}, "bfloat16"),
}
COMMON = {"device": "cpu", "mixed_precision": "bf16", "fvd_every": 0}


def _summary(e) -> dict:
    return {"config": dataclasses.asdict(e.cfg), "g_peak": e.g_peak, "g_at_peak": e.g_at_peak, "resident": e.resident,
            "d_peaks": {k: {"peak": p, "at_peak": at} for k, (p, at) in e.d_peaks.items()},
            "ddp_buckets": e.ddp_buckets, "accum_run": e.accum_run, "bf16": e.bf16, "target": e.target}


def child(kind: str, over: dict, dtype: str) -> dict:
    """One case in this process: the estimate, or (kind measure) the real step with its RSS."""
    import torch

    from sfv_train.config import TrainConfig
    from sfv_train.memory import estimate, measure

    torch.set_num_threads(1)
    cfg = TrainConfig(**over)
    t0 = time.time()
    if kind == "estimate":
        return {**_summary(estimate(cfg, param_dtype=getattr(torch, dtype))), "seconds": time.time() - t0}
    if over.get("stack") != "svd":        # small cases: code pages and arenas warmed by a first run
        measure(cfg, param_dtype=getattr(torch, dtype))
        gc.collect()
    base = rss_bytes()
    if not reset_peak_rss():
        raise OSError("bench_memory measures with /proc/self/clear_refs (Linux >= 4.0); this system has none")
    e = measure(cfg, param_dtype=getattr(torch, dtype))
    return {**_summary(e), "rss_peak_minus_base": peak_rss_bytes() - base, "seconds": time.time() - t0}


def run_child(kind: str, over: dict, dtype: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    cmd = [sys.executable, __file__, "child", kind, json.dumps(over), dtype]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{kind} {over} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _load(name: str) -> dict:
    path = OUT / name
    return json.loads(path.read_text()) if path.is_file() else {}


def _save(name: str, data: dict) -> None:
    from sfv_core.fsutil import atomic_write_json

    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_json(OUT / name, data)


def estimates() -> None:
    done = _load("estimates.json")
    for w, h in SIZES:
        for ckpt in (True, False):
            key = f"{w}x{h} checkpointing {'on' if ckpt else 'off'}"
            if key not in done:
                print(f"estimating {key} ...", flush=True)
                done[key] = run_child("estimate", {"stack": "svd", "width": w, "height": h,
                                                   "gradient_checkpointing": ckpt}, "float32")
                _save("estimates.json", done)
    write_md()


def validate(only: str | None = None) -> None:
    done = _load("validation.json")
    for name, (over, dtype) in VALIDATE.items():
        if name not in done and (only is None or only in name):
            print(f"validating {name} ...", flush=True)
            over = {**COMMON, **over}
            done[name] = {"config": over, "weights": dtype, "estimate": run_child("estimate", over, dtype),
                          "measured": run_child("measure", over, dtype)}
            _save("validation.json", done)
    write_md()


def _peaks(rec: dict) -> dict:
    d = rec["d_peaks"]
    return {"G": rec["g_peak"], **{f"D r1 {k}": d[k]["peak"] for k in ("none", "approx", "exact") if k in d}}


def write_md() -> None:
    from sfv_train.memory import MARGIN_FRACTION, MARGIN_GIB

    est, val = _load("estimates.json"), _load("validation.json")
    plan = lambda b: b / GIB * (1 + MARGIN_FRACTION) + MARGIN_GIB       # noqa: E731
    lines = ["# sfv-train's memory: estimate and measurement", "",
             "Written by `python benchmarks/bench_memory.py estimates|validate` (`sfv_train.memory`).", ""]
    if val:
        lines += ["## Estimate against measurement (this CPU, one thread, bf16 autocast, batch 1 x 2 micro-batches, "
                  "SM3, gradient checkpointing)", "",
                  "Peak live tensor bytes per phase, MiB: estimated on fake tensors / measured on real ones (the "
                  "same code, random weights, zero data); RSS: the process's peak resident set minus its resident "
                  "set before the models were built (glibc returning blocks over 64 KiB), against the highest "
                  "estimated peak (informative only where tensors dominate the process: the small cases' "
                  "few MiB of tensors are lost in the heap the warm-up run left).", "",
                  "| case | weights | phase | estimated | measured | error |", "|---|---|---|---|---|---|"]
        for name, rec in ((n, val[n]) for n in [*VALIDATE, *sorted(set(val) - set(VALIDATE))] if n in val):
            e, m = _peaks(rec["estimate"]), _peaks(rec["measured"])
            for phase in e:
                err = (e[phase] - m[phase]) / m[phase]
                lines.append(f"| {name} | {rec['weights']} | {phase} | {e[phase] / 2**20:.1f} | {m[phase] / 2**20:.1f} "
                             f"| {err:+.1%} |")
            top, rss = max(e.values()), rec["measured"]["rss_peak_minus_base"]
            lines.append(f"| {name} | {rec['weights']} | RSS, whole run | {top / 2**20:.1f} | {rss / 2**20:.1f} "
                         f"| {(top - rss) / rss:+.1%} |")
        lines.append("")
    if est:
        lines += ["## Estimates at the paper's sizes (full-size SVD configuration, float32 weights as the trainer "
                  "loads them, bf16 autocast, 14 frames, batch 1 x 4 micro-batches per GPU, SM3, EMA, D with both "
                  "heads, the VAE kept, CLIP freed)", "",
                  f"GiB of live tensors per GPU with more than one process (DDP's gradient buckets included); in "
                  f"brackets the planned figure: + {MARGIN_FRACTION:.0%} + {MARGIN_GIB:g} GiB for what the count "
                  f"cannot see.", "",
                  "| size | checkpointing | G phase's peak, 1 process | --r1 none | --r1 approx | --r1 exact (and lazy's R1 "
                  "steps) |",
                  "|---|---|---|---|---|---|"]
        keys = [f"{w}x{h} checkpointing {c}" for w, h in SIZES for c in ("on", "off")]
        for key, rec in ((k, est[k]) for k in keys if k in est):
            size, ckpt = key.split(" checkpointing ")
            row = [f"{rec['g_peak'] / GIB:.1f}"]
            for v in ("none", "approx", "exact"):
                peak = max(rec["g_peak"], rec["d_peaks"][v]["peak"]) + rec["ddp_buckets"]
                row.append(f"{peak / GIB:.1f} ({plan(peak):.1f})")
            lines.append(f"| {size} | {ckpt} | " + " | ".join(row) + " |")
        lines += ["", *fits_table(est, plan)]
    from sfv_core.fsutil import atomic_write_text

    atomic_write_text(OUT / "memory.md", "\n".join(lines))
    print("\n".join(lines))


def fits_table(est: dict, plan) -> list[str]:
    """Per size and card: the flag sets whose planned figure (several processes) fits."""
    from sfv_train.memory import CARDS

    lines = ["What fits per GPU with several processes (the planned figure against the card's usable "
             + ", ".join(f"{g:g}" for g in CARDS.values()) + " GiB; the other flags the defaults):", "",
             "| size | " + " | ".join(CARDS) + " |", "|---|" + "---|" * len(CARDS)]
    for w, h in SIZES:
        cells = []
        for gib in CARDS.values():
            ok = []
            for ckpt in ("on", "off"):
                rec = est.get(f"{w}x{h} checkpointing {ckpt}")
                for v in ("approx", "none", "exact") if rec else ():
                    peak = max(rec["g_peak"], rec["d_peaks"][v]["peak"]) + rec["ddp_buckets"]
                    if plan(peak) <= gib:
                        ok.append(f"`--r1 {v}`{' `--gradient-checkpointing off`' if ckpt == 'off' else ''} "
                                  f"({plan(peak):.0f})")
            cells.append(", ".join(ok) or "nothing")
        lines.append(f"| {w}x{h} | " + " | ".join(cells) + " |")
    return lines + [""]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "child":
        print(json.dumps(child(argv[1], json.loads(argv[2]), argv[3])))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("estimates", "validate", "table"))
    p.add_argument("--only", default=None, help="validate: only the cases whose name holds this (e.g. svd, tiny)")
    args = p.parse_args(argv)
    if args.what == "validate":
        validate(args.only)
    else:
        {"estimates": estimates, "table": write_md}[args.what]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
