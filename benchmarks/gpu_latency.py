"""GPU latency figures for Table 1 (run on a CUDA machine; prints figures, writes results/latency/).

    python benchmarks/gpu_latency.py [--stack svd] [--out-root results/latency] [--quick]

Runs ``sfv-bench latency --shape paper`` (full-size SVD UNet / temporal VAE / CLIP ViT-H/14 from
their configs with random weights unless ``--stack``; 14x4x72x128 latent; 25 frames for
AnimateLCM*) twice:

1. ``auto``: the fastest configuration whose UNet output matches fp32 eager within the tolerance
   (greedy search over dtype, channels_last, torch.compile, CUDA graphs) -> ``paper-<gpu>/``;
2. ``bf16``: dtype fixed to bf16, the rest searched -> ``paper-<gpu>-bf16/`` (the targets below
   are stated for bf16).

Then checks the targets for one H200 in bf16: one batch-1 UNet pass at 14x72x128 within 80 ms
(FLOP floor 57 ms at 790 TFLOP/s; the paper's A100: 300 ms) and a whole one-step video (image
encoder, VAE encode, one UNet pass, VAE decode of 14 frames) within 250 ms. Exit 0 when both are
met, 1 otherwise, 2 without a CUDA device. Commit the two result folders it writes.

Expect several minutes: every torch.compile candidate compiles the 1.5 B-parameter UNet once per
input shape (batch 1/2, 14/25 frames).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_UNET_MS = 80.0
TARGET_ONESTEP_E2E_MS = 250.0
H200_BF16_TFLOPS = 790.0  # dense bf16 matmul rate measured on an H200 (8192^3, random data)


def main(argv=None) -> int:
    import torch

    from bench.cli import main as sfv_bench
    from bench.latency.options import Options
    from bench.latency.report import _slug

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stack", default=None, help="real weights (tiny | svd | svd-xt | folder); default random")
    p.add_argument("--out-root", default="results/latency")
    p.add_argument("--quick", action="store_true", help="5 repeats, no torch.compile (a fast smoke run)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_latency: no CUDA device -- this script is for GPU machines "
              "(on a CPU: sfv-bench latency --shape tiny)", file=sys.stderr)
        return 2
    gpu = _slug(torch.cuda.get_device_name(0))
    runs = {"auto": ["--dtype", "auto"], "bf16": ["--dtype", "bf16"]}
    results = {}
    for name, extra in runs.items():
        out = Path(args.out_root) / (f"paper-{gpu}" + ("" if name == "auto" else f"-{name}"))
        cmd = ["--shape", "paper", "--device", "cuda", "--out", str(out), *extra]
        if args.stack:
            cmd += ["--stack", args.stack]
        if args.quick:
            cmd += ["--repeats", "5", "--compile", "off"]
        print(f"== {name}: sfv-bench latency {' '.join(cmd)}", flush=True)
        rc = sfv_bench(["latency", *cmd])
        if rc == 2:
            return 2
        results[name] = json.loads((out / "latency.json").read_text())

    ok = True
    print("\n== targets (one H200, bf16)")
    for name, r in results.items():
        b1 = r["unet_pass"]["batch1"]["median_ms"]
        floor = r["flops"]["unet_batch1"] / (H200_BF16_TFLOPS * 1e12) * 1e3
        onestep = next((m for m in r["methods"] if m["calls"] == 1 and m["frames"] == r["shape"]["num_frames"]), None)
        e2e = onestep["e2e"]["total_ms"] if onestep else float("nan")
        pc = r["precision_check"]
        print(f"[{name}] {Options(**r['options']).label()} on {r['env']['gpu_name']}: "
              f"batch-1 UNet pass {b1:.1f} ms (target {TARGET_UNET_MS:.0f}, floor {floor:.0f} ms, paper A100 300 ms, "
              f"{r['tflops_achieved']['unet_batch1']:.0f} TFLOP/s); one-step video {e2e:.1f} ms "
              f"(target {TARGET_ONESTEP_E2E_MS:.0f}); precision {pc['chosen_rel_l2']:.2e} <= {pc['tolerance']}: "
              f"{'pass' if pc['passed'] else 'FAIL'}")
        if name == "bf16":
            ok = b1 <= TARGET_UNET_MS and e2e <= TARGET_ONESTEP_E2E_MS and pc["passed"]
    print("targets met" if ok else "targets NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
