"""Full-size smoke of `sfv-train` on CPU: the real SVD configuration with random weights, every trainer.

    nice -n 10 python benchmarks/full_size_smoke_train.py --write results/full_size_smoke/train.md
    python benchmarks/full_size_smoke_train.py --parts meta          # the suite's part: seconds, no weights

Parts (``--parts``, comma-separated, run in this order, each in its own process so its memory is
freed and its peak RSS is its own):

* ``meta``: every trainer's models (G, EMA, discriminator with its heads, teacher and target network
  for lcm) built from the real configurations on the meta device with the defaults' optimisers (SM3;
  lcm: AdamW), and what one checkpoint weighs (``sfv_train.checkpoint.checkpoint_sizes``: the state
  dicts, and the optimiser state one meta step creates). Allocates nothing.
* ``stack``: a random full-size SVD stack folder (UNet 1.525 B, VAE, CLIP ViT-H image encoder; saved in
  bfloat16, 4.4 GB) and a plain folder of 2 synthetic videos; made once under ``--work``.
* ``sfv``, ``ufogen``, ``ladd``, ``lcm``: ``sfv-train --method M`` through its command line (data, cached
  latents, LADD's teacher data, G/EMA/D, checkpoints, export), 2 steps at the latent ``--size`` (8: 64x64
  pixels, 14 frames) with the defaults a user gets on a GPU (the method's preset, SM3/AdamW, EMA, R1 as
  defaulted, gradient checkpointing, bf16 autocast), except: one micro-batch per step (``--grad-accum
  1``; the preset's 4 run the same code four times) and the stack's weights in bfloat16
  (``Trainer.weights_dtype``; in float32 G, EMA, gradients and SM3 state alone are 24 GB). ``sfv`` then
  resumes its run for a third step (``--resume OUT``), reloads the export with the benchmark's ``sfv``
  adapter and generates one video from it.
* ``resume2``: two processes (torchrun, gloo): the ``sfv`` run's one-process checkpoint resumed by two
  is refused with one line; then two processes train 2 steps from scratch and resume that run for a
  third. Each process holds the whole model, so it is skipped when the memory available (RAM and swap)
  is under twice the ``sfv`` part's peak (it says so). A trainer part is skipped likewise when the
  memory available is under what it needs (``NEEDS``: lcm holds six copies of the UNet).

Prints, per part, wall seconds and peak RSS (the part's process; ``resume2``: the larger of the two)
and writes them to ``--write`` (markdown + JSON beside it). CPU, torch's default threads unless
``--threads``; numbers from a shared machine: the times are indicative, the memory is what to read.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from peak_rss import peak_rss_bytes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRAINERS = ("sfv", "ufogen", "ladd", "lcm")
PARTS = ("meta", "stack", *TRAINERS, "resume2")
DEFAULT_PARTS = PARTS


# memory a trainer part needs at a latent of 8 (bfloat16 stack): sfv measured 13.5 GB; lcm holds G, the
# teacher, the target network, G's gradients and AdamW's two moments: 6 copies of the 3.05 GB UNet
NEEDS = {"sfv": 15e9, "ufogen": 15e9, "ladd": 15e9, "lcm": 20e9}


def psutil_available() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f}"


# ------------------------------------------------------------------------------------------ meta
def meta_trainer(method: str, out: Path):
    """A trainer of ``method`` (the CLI's defaults) whose models are built from the full-size UNet config on
    the meta device (no stack, no data: build_models only)."""
    import torch
    from accelerate import Accelerator

    from diffusers import UNetSpatioTemporalConditionModel

    from methods.models.configs import FULL_CONFIGS
    from sfv_train.config import TrainConfig
    from sfv_train.train import trainer_class

    cfg = TrainConfig(data=str(out), out=str(out), stack="-", method=method, report_to="none", progress=False)
    t = trainer_class(method)(cfg)
    t.acc = Accelerator(cpu=True, device_placement=False)
    t.device, t.bf16, t.rank, t.world = torch.device("meta"), True, 0, 1
    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel.from_config(FULL_CONFIGS["unet"])
    unet = unet.to("meta")            # AlphaBlender's mix_factor ignores the default device (configs.build_models)
    t.build_models(unet)              # the heads are made on the CPU (54 M parameters), then moved to meta
    return t


def part_meta(args) -> dict:
    from sfv_train.checkpoint import checkpoint_sizes, state_dict_bytes

    rows = {}
    for method in TRAINERS:
        t = meta_trainer(method, Path(args.work) / "meta")
        sizes = checkpoint_sizes(*t.checkpoint_parts())
        g = t.acc.unwrap_model(t.G)
        rows[method] = {"files": sizes, "total": sum(sizes.values()),
                        "generator_params": sum(p.numel() for p in g.parameters()),
                        "head_params": sum(p.numel() for p in t.D.head_parameters()) if hasattr(t, "D") else 0,
                        "export": state_dict_bytes(t.export_unet().state_dict()), "optimizer": t.cfg.optimizer}
        print(f"{method:7} one checkpoint {_gb(rows[method]['total'])} GB: "
              + ", ".join(f"{k} {_gb(v)}" for k, v in sizes.items())
              + f"; export {_gb(rows[method]['export'])} GB ({t.cfg.optimizer}, G "
              f"{rows[method]['generator_params'] / 1e9:.3f} B, heads {rows[method]['head_params'] / 1e6:.1f} M)")
    return {"checkpoints": rows}


# ------------------------------------------------------------------------------------------ stack, data
def part_stack(args) -> dict:
    import torch

    from methods.models.configs import FULL_CONFIGS, TINY_CONFIGS
    from methods.models.stacks import build_pipeline, save_stack
    from sfv_core.data.synthetic import make_synthetic

    work = Path(args.work)
    stack, data = work / "stack", work / "data"
    if not (stack / "model_index.json").is_file():
        configs = {**FULL_CONFIGS, "feature_extractor": TINY_CONFIGS["feature_extractor"],
                   "scheduler": TINY_CONFIGS["scheduler"]}
        tmp = work / ".stack-tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_stack(build_pipeline(configs, seed=0), tmp, dtype=torch.bfloat16)
        os.replace(tmp, stack)
    if not data.is_dir():
        ucf = make_synthetic(work / "ucf", seed=0, classes=1, groups=3, clips=1, frames=60, width=128, height=96)
        videos = sorted(p for p in Path(ucf).rglob("*") if p.suffix in (".avi", ".mp4", ".npz", ".npy"))[:2]
        data.mkdir(parents=True)
        for v in videos:
            shutil.copy(v, data / v.name)
    size = sum(p.stat().st_size for p in stack.rglob("*") if p.is_file())
    print(f"stack {stack} ({_gb(size)} GB, bfloat16), data {data} ({len(list(data.iterdir()))} videos)")
    return {"stack_bytes": size}


# ------------------------------------------------------------------------------------------ trainers
def train_argv(args, method: str, out: Path) -> list[str]:
    work = Path(args.work)
    px = str(args.size * 8)
    return ["--stack", str(work / "stack"), "--data", str(work / "data"), "--out", str(out), "--method", method,
            "--width", px, "--height", px, "--grad-accum", "1", "--mixed-precision", "bf16", "--max-steps", "2",
            "--checkpoint-every", "2", "--log-every", "1", "--preview-every", "0", "--fvd-every", "0",
            "--report-to", "none", "--no-progress", "--latent-cache", str(work / "latents")]


def train_cli(argv: list[str]) -> int:
    """`sfv-train ARGV` with the stack loaded in bfloat16 (see the module doc)."""
    import torch

    from bench.cli import train_main
    from sfv_train.trainer import Trainer

    Trainer.weights_dtype = torch.bfloat16
    return train_main(argv)


def part_trainer(args, method: str) -> dict:
    out = Path(args.work) / "runs" / method
    shutil.rmtree(out, ignore_errors=True)
    rec = {}
    start = time.perf_counter()
    if train_cli(train_argv(args, method, out)):
        raise SystemExit(f"sfv-train --method {method} failed")
    rec["train_s"] = time.perf_counter() - start
    rec["checkpoint_bytes"] = sum(p.stat().st_size for p in (out / "checkpoints" / "step-000002").iterdir())
    rec["export_bytes"] = sum(p.stat().st_size for p in (out / "export").rglob("*") if p.is_file())
    if method == "sfv":
        start = time.perf_counter()
        if train_cli(["--resume", str(out), "--max-steps", "3"]):
            raise SystemExit("sfv-train --resume failed")
        rec["resume_s"] = time.perf_counter() - start
        start = time.perf_counter()
        rec["video_shape"] = generate_from_export(args, out / "export" / "unet")
        rec["generate_s"] = time.perf_counter() - start
    else:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)     # only sfv's is resumed (resume2)
    return rec


def generate_from_export(args, unet: Path) -> list[int]:
    """One video from the exported UNet, by the benchmark's `sfv:1` adapter (float32)."""
    import numpy as np
    import torch

    from methods import get_method

    m = get_method("sfv:1", unet=str(unet)).load(Path(args.work) / "stack", "cpu", torch.float32)
    px = args.size * 8
    image = np.random.default_rng(0).integers(0, 255, (1, px, px, 3), dtype=np.uint8)
    video = m.generate(image, [0], num_frames=14, fps=7)
    assert video.dtype == np.uint8 and np.isfinite(video.astype(np.float32)).all()
    print(f"generated one video {tuple(video.shape)} from {unet}")
    return list(video.shape)


def part_resume2(args, sfv_peak: int | None) -> dict:
    """Two processes: a one-process checkpoint refused, then a two-process run trained and resumed."""
    import psutil

    need, free = 2 * (sfv_peak or 0), psutil.virtual_memory().available + psutil.swap_memory().free
    if not sfv_peak or free < need:
        why = (f"needs about {_gb(need)} GB (2 x the sfv part's peak), {_gb(free)} GB available (RAM + swap)"
               if sfv_peak else "run the sfv part first (its checkpoint and peak)")
        print(f"resume2 skipped: {why}")
        return {"skipped": why}
    work = Path(args.work) / "runs"
    out = work / "sfv-2procs"
    shutil.rmtree(out, ignore_errors=True)
    rec = {"ram_gb": round(psutil.virtual_memory().total / 1e9, 1),
           "swap_gb": round(psutil.swap_memory().total / 1e9, 1)}
    steps = [("refused_rc", ["--resume", str(work / "sfv"), "--max-steps", "4"]),
             ("train_rc", train_argv(args, "sfv", out)),
             ("resume_rc", ["--resume", str(out), "--max-steps", "3"])]
    for key, argv in steps:
        start = time.perf_counter()
        rec[key] = _torchrun_cli(argv)
        rec[key.replace("_rc", "_s")] = time.perf_counter() - start
        print(f"resume2 {key}: {rec[key]} in {rec[key.replace('_rc', '_s')]:.0f} s")
    held = out / "checkpoints" / "step-000003" / "state.json"
    state = json.loads(held.read_text()) if held.is_file() else {"step": None, "num_processes": None}
    rec["resumed_checkpoint"] = {"step": state["step"], "num_processes": state["num_processes"]}
    # refused as a UserError (exit 2) without training the one-process run on; the resumed run records 2 processes
    refused = rec["refused_rc"] == 2 and not (work / "sfv" / "checkpoints" / "step-000004").exists()
    ok = (refused and rec["train_rc"] == 0 and rec["resume_rc"] == 0
          and rec["resumed_checkpoint"] == {"step": 3, "num_processes": 2})
    rec["rc"] = 0 if ok else 1
    return rec


def _torchrun_cli(argv: list[str]) -> int:
    """`sfv-train ARGV` (bfloat16 stack) as two torchrun processes, one torch thread each."""
    from bench.dist import torchrun

    return torchrun(2, [sys.executable, str(Path(__file__).resolve()), "--train-cli", *argv], threads=1)


# ------------------------------------------------------------------------------------------ driver
def run_part(args, part: str, results: dict) -> dict:
    """``part`` in a child process of this script; its record with wall seconds and peak RSS."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", part, "--work", args.work, "--size", str(args.size)]
    if part == "resume2":
        cmd += ["--sfv-peak", str(results.get("sfv", {}).get("peak_rss_bytes") or 0)]
    start = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    sys.stdout.write(p.stdout)
    rec = {"rc": p.returncode, "wall_s": round(wall, 1)}
    line = [x for x in p.stdout.splitlines() if x.startswith("PART ")]
    if line:
        rec.update(json.loads(line[-1][5:]))
    if p.returncode:
        rec["error"] = (p.stderr.strip().splitlines() or ["?"])[-1][:300]
        sys.stderr.write(p.stderr[-3000:])
    print(f"== {part}: rc {p.returncode}, {wall:.0f} s, peak RSS {_gb(rec.get('peak_rss_bytes') or 0)} GB")
    return rec


def one_part(args) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    fn = {"meta": part_meta, "stack": part_stack}.get(args.one)
    if args.one == "resume2":
        rec = part_resume2(args, args.sfv_peak)
        rec["peak_rss_bytes"] = peak_rss_bytes(children=True)
    elif args.one in NEEDS and psutil_available() < NEEDS[args.one]:
        rec = {"skipped": f"needs about {_gb(NEEDS[args.one])} GB, {_gb(psutil_available())} GB available"}
        print(f"{args.one} skipped: {rec['skipped']}")
    else:
        rec = fn(args) if fn else part_trainer(args, args.one)
        rec["threads"] = torch.get_num_threads()
        rec["peak_rss_bytes"] = peak_rss_bytes()
    print("PART " + json.dumps(rec))
    return 1 if rec.get("rc") else 0


def write(path: Path, results: dict, args) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    threads = args.threads or os.environ.get("OMP_NUM_THREADS") or "torch's default"
    lines = ["# sfv-train full-size smoke (CPU, random weights)\n",
             f"`nice -n 10 python benchmarks/full_size_smoke_train.py --parts {','.join(results)}` (latent "
             f"{args.size}x{args.size}, {args.size * 8}x{args.size * 8} pixels, 14 frames, 2 videos; stack weights "
             f"bfloat16, bf16 autocast, one micro-batch per step, the rest the defaults) on "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other jobs (times "
             f"indicative), torch threads {threads}; {time.strftime('%Y-%m-%d')}. sfv's part also resumes its run "
             "for a third step and generates one video from the export with the benchmark's `sfv:1` adapter "
             "(float32: its peak includes that); ladd's includes its teacher data (svd:25, CFG).\n",
             "| part | rc | wall s | peak RSS GB | what |", "|---|---|---|---|---|"]
    for part, r in results.items():
        what = {k: round(v, 1) if isinstance(v, float) else v for k, v in r.items()
                if k not in ("rc", "wall_s", "peak_rss_bytes", "checkpoints", "note")}
        lines.append(f"| {part} | {r['rc']} | {r['wall_s']} | {_gb(r.get('peak_rss_bytes') or 0)} | "
                     f"{json.dumps(what)[:300]} |")
    meta = results.get("meta", {}).get("checkpoints")
    if meta:
        lines += ["", "One checkpoint at full size, float32 weights (from the meta-device build; GB = 1e9 bytes):", "",
                  "| method | optimiser | files (GB) | total GB | export GB |", "|---|---|---|---|---|"]
        for m, r in meta.items():
            files = ", ".join(f"{k} {_gb(v)}" for k, v in r["files"].items())
            lines.append(f"| {m} | {r['optimizer']} | {files} | {_gb(r['total'])} | {_gb(r['export'])} |")
    two = results.get("resume2", {})
    if "train_rc" in two:
        lines += ["", f"resume2: two processes, each holding the whole model, on {two.get('ram_gb', '?')} GB of RAM "
                  f"with {two.get('swap_gb', '?')} GB of swap: its times measure swapping, not training. "
                  f"{two.get('note', '')}".rstrip()]
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")


def main(argv=None) -> int:
    from sfv_core.logs import setup_console

    setup_console()                                 # the trainers' messages on the console, as sfv-train shows them
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--train-cli"]:                 # a process of the resume2 launch
        return train_cli(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default=",".join(DEFAULT_PARTS), help=f"comma list of {', '.join(PARTS)}")
    p.add_argument("--work", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "sfv-full-size-smoke"),
                   help="the stack, data and run folders (~20 GB at most; kept for a rerun)")
    p.add_argument("--size", type=int, default=8, choices=(8, 16), help="latent size (pixels / 8)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--write", default=None, help="a markdown file for the table (JSON beside it)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--sfv-peak", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        return one_part(args)
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    bad = [x for x in parts if x not in PARTS]
    if bad:
        p.error(f"unknown part(s) {', '.join(bad)}; valid: {', '.join(PARTS)}")
    Path(args.work).mkdir(parents=True, exist_ok=True)
    results: dict = {}
    prior = Path(args.write).with_suffix(".json") if args.write else None
    if prior and prior.is_file():                   # keep what an earlier call measured (parts run one by one)
        results = json.loads(prior.read_text())
    for part in sorted(parts, key=PARTS.index):
        results[part] = run_part(args, part, results)
        if args.write:
            write(Path(args.write), results, args)
    return max((r["rc"] for r in results.values()), default=0) and 1


if __name__ == "__main__":
    sys.exit(main())
