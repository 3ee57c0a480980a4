"""Time one sfv-train optimisation step (G phase + D phase) and record peak memory.

    python benchmarks/bench_train.py                 # GPU if available (full size), else CPU (tiny)
    python benchmarks/bench_train.py --size tiny --device cpu --r1 exact,lazy-off,none

Full size (the paper's training shape): the real SVD UNet architecture (1.525 B parameters, random
weights -- no download), 14 frames at 768x448 (latent 14x4x56x96), batch 1, no accumulation, bf16
autocast, gradient checkpointing on (G and the frozen D backbone), SM3, spatial + temporal heads.
Tiny: the tiny stack's UNet at 64x64, 14 frames, fp32, checkpointing on.

R1 variants: ``exact`` (double backward under the math SDPA backend, every step), ``none`` (the
step a lazy R1 takes on the k-1 steps without the penalty), ``approx`` (one extra D forward).
Per variant: median wall time of ``--repeat`` steps after ``--warmup`` steps (CUDA synchronised),
and peak memory (CUDA: torch.cuda.max_memory_allocated over the timed steps; CPU: the process's
peak RSS, which includes everything loaded so far). Prints a table; ``--json`` writes the figures.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from peak_rss import peak_rss_bytes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class RandomLatents:
    """Stand-in for the latent cache: n random clips with the shapes the trainer expects."""

    def __init__(self, n, frames, h, w, emb_dim, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.items = [{"latents": torch.randn(frames, 4, h, w, generator=g),
                       "cond_latent": torch.randn(4, h, w, generator=g),
                       "image_embeds": torch.randn(1, emb_dim, generator=g),
                       "added_time_ids": torch.tensor([6.0, 127.0, 0.02])} for _ in range(n)]

    def __len__(self):
        return len(self.items)

    def batch(self, indices, device):
        return {k: torch.stack([self.items[int(i)][k] for i in indices]).to(device) for k in self.items[0]}


def make_trainer(size: str, device: str, r1: str, out: Path):
    from accelerate import Accelerator
    from diffusers import UNetSpatioTemporalConditionModel

    from methods.models.configs import FULL_CONFIGS, TINY_CONFIGS
    from sfv_train.config import TrainConfig
    from sfv_train.trainer import Trainer

    torch.manual_seed(0)
    if size == "full":
        width, height, frames = 768, 448, 14
        with torch.device(device):
            unet = UNetSpatioTemporalConditionModel.from_config(FULL_CONFIGS["unet"])
    else:
        width, height, frames = 64, 64, 14
        unet = UNetSpatioTemporalConditionModel.from_config(TINY_CONFIGS["unet"]).to(device)
    bf16 = size == "full" and device.startswith("cuda")
    cfg = TrainConfig(data="-", out=str(out), stack="-", width=width, height=height, num_frames=frames,
                      grad_accum=1, batch_size=1, r1=r1, mixed_precision="bf16" if bf16 else "no",
                      gradient_checkpointing=True, report_to="none", progress=False)
    t = Trainer(cfg)
    t.acc = Accelerator(cpu=device == "cpu")
    t.device, t.bf16, t.rank, t.world = t.acc.device, bf16, 0, 1
    t.gen = torch.Generator().manual_seed(0)
    t.data = RandomLatents(4, frames, height // 8, width // 8, unet.config.cross_attention_dim)
    t.build_models(unet)
    return t


def time_steps(t, warmup: int, repeat: int) -> tuple[list[float], dict]:
    """Seconds of each of ``repeat`` G+D steps after ``warmup`` ones (CUDA synchronised, peak memory
    statistics reset after the warm-up), and the last step's metrics."""
    cuda = t.device.type == "cuda"
    for _ in range(warmup):
        t.train_step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, m = [], {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        m = t.train_step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times, m


def bench(size: str, device: str, r1: str, warmup: int, repeat: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t = make_trainer(size, device, r1, Path(tmp))
        n_g = sum(p.numel() for p in t.acc.unwrap_model(t.G).parameters())
        n_heads = sum(p.numel() for p in t.D.head_parameters())
        cuda = t.device.type == "cuda"
        times, m = time_steps(t, warmup, repeat)
        peak = torch.cuda.max_memory_allocated() if cuda else peak_rss_bytes()
        return {"size": size, "device": str(t.device), "r1": r1, "bf16": t.bf16, "step_s_median": statistics.median(times),
                "step_s_min": min(times), "repeat": repeat, "peak_bytes": int(peak),
                "peak_kind": "cuda max_memory_allocated" if cuda else "process peak RSS",
                "generator_params": n_g, "head_params": n_heads, "finite": all(map(lambda v: v == v, m.values()))}


def main(argv=None) -> int:
    from sfv_core.logs import setup_console

    setup_console()                                 # the trainer's messages on the console, as sfv-train shows them
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=("auto", "full", "tiny"), default="auto", help="auto: full on CUDA, tiny on CPU")
    p.add_argument("--device", default="auto")
    p.add_argument("--r1", default="exact,none", help="comma list of exact, none, approx")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: torch's default)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    size = args.size if args.size != "auto" else ("full" if device.startswith("cuda") else "tiny")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [bench(size, device, r1.strip(), args.warmup, args.repeat) for r1 in args.r1.split(",") if r1.strip()]
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"{platform.processor() or 'CPU'} ({torch.get_num_threads()} threads)"
    print(f"sfv-train step benchmark on {name}, torch {torch.__version__}")
    print(f"{'size':6} {'r1':6} {'dtype':6} {'step median s':>14} {'step min s':>11} {'peak GiB':>9}  peak of")
    for r in rows:
        print(f"{r['size']:6} {r['r1']:6} {'bf16' if r['bf16'] else 'fp32':6} {r['step_s_median']:14.3f} "
              f"{r['step_s_min']:11.3f} {r['peak_bytes'] / 2**30:9.2f}  {r['peak_kind']}")
    print(f"generator {rows[0]['generator_params'] / 1e6:.1f} M parameters, heads {rows[0]['head_params'] / 1e6:.2f} M")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
