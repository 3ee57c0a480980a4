"""What the sfv-train tests share: the tiny options and the ways a checkpoint gets damaged."""
from __future__ import annotations

from pathlib import Path

# the tiny settings; every option of a run that a --resume must share
TINY = ["--stack", "tiny", "--width", "64", "--height", "64", "--num-frames", "6", "--grad-accum", "1",
        "--report-to", "none", "--no-progress", "--optimizer", "adamw", "--r1", "none",
        "--checkpoint-every", "1", "--log-every", "1"]


def truncate(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garbage(path: Path):
    path.write_text("{ not json")


FAULTS = {  # kind -> (file in a checkpoint, how it is damaged)
    "generator": ("generator.safetensors", truncate),
    "ema": ("ema.safetensors", truncate),
    "heads": ("heads.safetensors", truncate),
    "optimizer": ("optimizer_g.pt", truncate),
    "state": ("state.json", garbage),
    "rng": ("rng-0.pt", Path.unlink),
}


def damage_checkpoints(run: Path, kind: str, steps=(1, 2)):
    name, hurt = FAULTS[kind]
    for s in steps:
        hurt(run / "checkpoints" / f"step-{s:06d}" / name)
