"""Checkpoints of a training run: atomic folders, exact resume (weights, optimisers, RNG), export.

A checkpoint is ``<root>/step-XXXXXX/`` written as ``.tmp-step-XXXXXX`` and renamed when complete:
``*.safetensors`` (weights), ``*.pt`` (optimiser states, ``torch.save``; read with
``weights_only=True``), ``rng-<rank>.pt`` (every RNG of that process), ``config.json`` and
``state.json`` (step, process count, ...). Only folders holding a state.json count as finished.
The export is ``<out>/export/`` (a diffusers model folder + a JSON record), replaced atomically.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from sfv_core.errors import UserError
from sfv_core.fsutil import atomic_write_json, load_safetensors, save_safetensors

CKPT_PREFIX = "step-"


def list_checkpoints(root: Path) -> list[Path]:
    """Finished checkpoints (``step-XXXXXX`` with a state.json), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(CKPT_PREFIX)
             and p.name[len(CKPT_PREFIX):].isdigit() and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CKPT_PREFIX):]))


def rng_state(gen: torch.Generator) -> dict:
    """Python, numpy, torch (CPU, CUDA) and the run's own generator state, as tensors and lists."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {"python": [py[0], list(py[1]), py[2]],
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                       int(np_state[3]), float(np_state[4])],
             "torch": torch.get_rng_state(), "train": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, gen: torch.Generator) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    gen.set_state(state["train"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(root: Path, step: int, acc, gen: torch.Generator, *, weights: dict, optimizers: dict,
                    config: dict, state: dict, limit: int = 0) -> Path:
    """Write ``root/step-XXXXXX`` atomically (every process its RNG file, the main process the rest).

    ``weights``: name -> state dict (saved as name.safetensors); ``optimizers``: name -> optimiser
    (name.pt); ``limit`` > 0 keeps only the newest ``limit`` checkpoints."""
    final = root / f"{CKPT_PREFIX}{step:06d}"
    tmp = root / f".tmp-{CKPT_PREFIX}{step:06d}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    torch.save(rng_state(gen), tmp / f"rng-{acc.process_index}.pt")
    acc.wait_for_everyone()
    if acc.is_main_process:
        for name, sd in weights.items():
            save_safetensors(sd, tmp / f"{name}.safetensors")
        for name, opt in optimizers.items():
            torch.save(opt.state_dict(), tmp / f"{name}.pt")
        atomic_write_json(tmp / "config.json", config)
        atomic_write_json(tmp / "state.json", {"step": step, "num_processes": acc.num_processes,
                                               "time": time.time(), **state})
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if limit > 0:
            for old in list_checkpoints(root)[:-limit]:
                shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return final


def load_checkpoint(ckpt: Path, acc, gen: torch.Generator, *, weights: dict, optimizers: dict) -> dict:
    """Restore a checkpoint written by ``save_checkpoint``; returns its state.json.

    ``weights``: name -> a function taking the loaded state dict; ``optimizers``: name -> optimiser."""
    state = json.loads((ckpt / "state.json").read_text())
    if state["num_processes"] != acc.num_processes:
        raise UserError(f"--resume: {ckpt} was written by {state['num_processes']} process(es), this run has "
                        f"{acc.num_processes}: launch with the same number of processes")
    for name, load in weights.items():
        load(load_safetensors(ckpt / f"{name}.safetensors"))
    for name, opt in optimizers.items():
        opt.load_state_dict(torch.load(ckpt / f"{name}.pt", map_location=acc.device, weights_only=True))
    set_rng_state(torch.load(ckpt / f"rng-{acc.process_index}.pt", weights_only=True), gen)
    return state


def export_model(out: Path, acc, model, name: str, record: dict) -> Path:
    """``out/export/<name>/`` (diffusers ``save_pretrained``, safetensors) and ``out/export/sfv_train.json``,
    replacing any previous export atomically. Returns ``out/export``."""
    final = out / "export"
    if acc.is_main_process:
        tmp = out / ".export-tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp / name, safe_serialization=True)
        atomic_write_json(tmp / "sfv_train.json", record)
        old = out / ".export-old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return final


def find_resume(resume: str, root: Path, compare) -> Path | None:
    """The checkpoint a run continues from, refusing bad situations before anything is written.

    ``resume``: '' (a fresh run: refused when ``root`` holds checkpoints), 'latest' or a checkpoint
    folder. ``compare(path)`` checks a config.json against the run's configuration."""
    existing = list_checkpoints(root)
    out = root.parent
    if not resume:
        if existing:
            raise UserError(f"{out} already holds checkpoints (latest {existing[-1].name}): pass --resume "
                            f"to continue that run, or choose another --out")
        return None
    if resume == "latest":
        if not existing:
            compare(out / "config.json")
            return None
        ckpt = existing[-1]
    else:
        ckpt = Path(resume).expanduser()
        if not (ckpt / "state.json").is_file():
            raise UserError(f"--resume {ckpt}: not a finished checkpoint folder (no state.json); pass "
                            f"--resume latest or a {root}/{CKPT_PREFIX}XXXXXX folder")
    compare(ckpt / "config.json")
    compare(out / "config.json")
    return ckpt
