"""Checkpoints of a training run: atomic folders, exact resume (weights, optimisers, RNG), export.

A checkpoint is ``<root>/step-XXXXXX/`` written as ``.tmp-step-XXXXXX`` and renamed when complete:
``*.safetensors`` (weights), ``*.pt`` (optimiser states, ``torch.save``; read with
``weights_only=True``), ``rng-<rank>.pt`` (every RNG of that process), ``config.json`` and
``state.json`` (step, process count, the files, ...). Only folders holding a state.json count as
finished; ``damage`` tells whether one can be read back (a killed copy, a full disk), so a resume
falls back to the newest intact checkpoint. The export is ``<out>/export/`` (a diffusers model
folder + a JSON record), replaced atomically.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

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
        files = sorted([f"{n}.safetensors" for n in weights] + [f"{n}.pt" for n in optimizers])
        atomic_write_json(tmp / "state.json", {"step": step, "num_processes": acc.num_processes,
                                               "time": time.time(), "files": files, **state})
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
    state = _read(ckpt / "state.json", lambda p: json.loads(p.read_text()))
    if state["num_processes"] != acc.num_processes:
        raise UserError(f"--resume: {ckpt} was written by {state['num_processes']} process(es), this run has "
                        f"{acc.num_processes}: launch with the same number of processes")
    for name, load in weights.items():
        load(_read(ckpt / f"{name}.safetensors", load_safetensors))
    for name, opt in optimizers.items():
        opt.load_state_dict(_read(ckpt / f"{name}.pt",
                                  lambda p: torch.load(p, map_location=acc.device, weights_only=True)))
    set_rng_state(_read(ckpt / f"rng-{acc.process_index}.pt", lambda p: torch.load(p, weights_only=True)), gen)
    return state


def _read(path: Path, read):
    """``read(path)``, any failure a UserError naming the file."""
    try:
        return read(path)
    except Exception as e:  # noqa: BLE001 - every reader has its own errors
        raise UserError(f"--resume: {path} is damaged ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                        f"pass an older {CKPT_PREFIX}XXXXXX folder to --resume") from None


def damage(ckpt: Path) -> str | None:
    """Why a finished checkpoint cannot be read back ('FILE: reason'), None when it looks intact.

    Cheap (no tensor is loaded): state.json and config.json parse, every file state.json lists and
    every process's rng file exists, each .safetensors covers its header, each .pt is a whole zip."""
    try:
        state = json.loads((ckpt / "state.json").read_text())
        num, _ = int(state["num_processes"]), int(state["step"])
    except Exception:  # noqa: BLE001 - unreadable, not JSON, missing keys
        return "state.json: not a valid state file"
    try:
        json.loads((ckpt / "config.json").read_text())
    except Exception:  # noqa: BLE001
        return "config.json: missing or not JSON"
    for name in [*state.get("files", []), *(f"rng-{r}.pt" for r in range(num))]:
        if not (ckpt / name).is_file():
            return f"{name}: missing"
    for path in sorted(ckpt.glob("*.safetensors")):
        try:
            with safe_open(str(path), "pt"):
                pass
        except Exception:  # noqa: BLE001
            return f"{path.name}: truncated or not a safetensors file"
    for path in sorted(ckpt.glob("*.pt")):
        try:
            zipfile.ZipFile(path).close()
        except Exception:  # noqa: BLE001
            return f"{path.name}: truncated or not a torch.save file"
    return None


def remove_stale(root: Path, out: Path) -> list[str]:
    """Remove what a killed run leaves: unfinished checkpoints (``.tmp-step-*``) and export copies."""
    gone = []
    for path in [*root.glob(f".tmp-{CKPT_PREFIX}*"), out / ".export-tmp", out / ".export-old"]:
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            gone.append(str(path.relative_to(out)))
    return gone


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


def find_resume(resume: str, root: Path, compare, log=print) -> Path | None:
    """The checkpoint a run continues from, refusing bad situations before anything is written.

    ``resume``: '' (a fresh run: refused when ``root`` holds checkpoints), 'latest' (the newest intact
    checkpoint; each damaged newer one is logged) or a checkpoint folder. ``compare(path)`` checks a
    config.json against the run's configuration."""
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
        ckpt = _newest_intact(existing, log)
    else:
        ckpt = Path(resume).expanduser()
        if not (ckpt / "state.json").is_file():
            raise UserError(f"--resume {ckpt}: not a finished checkpoint folder (no state.json); pass the run "
                            f"folder or a {root}/{CKPT_PREFIX}XXXXXX folder")
        why = damage(ckpt)
        if why:
            raise UserError(f"--resume {ckpt}: damaged, {why}; pass an older {CKPT_PREFIX}XXXXXX folder or "
                            f"--resume {out} (its newest intact checkpoint)")
    compare(ckpt / "config.json")
    compare(out / "config.json")
    return ckpt


def _newest_intact(existing: list[Path], log) -> Path:
    damaged = []
    for ckpt in reversed(existing):
        why = damage(ckpt)
        if why is None:
            for bad, bad_why in damaged:
                log(f"warning: checkpoint {bad} is damaged ({bad_why}); resuming from {ckpt.name}, "
                    f"the newest intact checkpoint")
            return ckpt
        damaged.append((ckpt, why))
    root = existing[0].parent
    shown = "; ".join(f"{c.name}/{w}" for c, w in damaged[:4])
    raise UserError(f"--resume: no intact checkpoint in {root} ({shown}), so no --resume checkpoints/"
                    f"{CKPT_PREFIX}XXXXXX can continue this run: restart it with another --out (or move "
                    f"{root} away)")
