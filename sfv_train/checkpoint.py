"""Checkpoints of a training run: atomic folders, exact resume (weights, optimisers, RNG), export.

A checkpoint is ``<root>/step-XXXXXX/`` written as ``.tmp-step-XXXXXX`` and renamed when complete:
``*.safetensors`` (weights), ``*.pt`` (optimiser states, ``torch.save``; read with
``weights_only=True``), ``rng-<rank>.pt`` (every RNG of that process), ``config.json`` and
``state.json`` (step, process count, the files, ...). Only folders holding a state.json count as
finished; ``damage`` tells whether one can be read back (a killed copy, a full disk), so a resume
falls back to the newest intact checkpoint; a file that fails to load is called damaged only when
it is (``file_damage``). Every process writes a share of the files (all hold the same weights), so
the others wait at the barrier for ~1/P of the write; a full disk removes the unfinished folder and
is one OSError naming the fix. ``limit`` keeps the newest K. The export is ``<out>/export/`` (a
diffusers model folder + a JSON record), replaced atomically; milestones are exports kept under
``<out>/milestones/step-XXXXXX/``. ``checkpoint_sizes`` weighs one checkpoint before it is written
(optimiser state included: one step on meta copies).
"""
from __future__ import annotations

import errno
import json
import logging
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

log = logging.getLogger(__name__)

CKPT_PREFIX = "step-"
MILESTONES = "milestones"     # out/milestones/step-XXXXXX: exports kept every --milestone-every steps


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
    """Write ``root/step-XXXXXX`` atomically; returns it.

    ``weights``: name -> state dict (saved as name.safetensors); ``optimizers``: name -> optimiser
    (name.pt); ``limit`` > 0 keeps only the newest ``limit`` checkpoints. Every process writes its
    RNG file and a share of the others (every process holds the same weights and optimiser states),
    largest first, so the others wait at the barrier for about 1/P of the whole write, not all of it.
    A full disk: the unfinished folder is removed (older checkpoints are kept) and an OSError says so."""
    final = root / f"{CKPT_PREFIX}{step:06d}"
    tmp = root / f".tmp-{CKPT_PREFIX}{step:06d}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    writers = {f"{name}.safetensors": (lambda p, sd=sd: save_safetensors(sd, p), state_dict_bytes(sd))
               for name, sd in weights.items()}
    writers.update({f"{name}.pt": (lambda p, o=opt: _torch_save(o.state_dict(), p), optimizer_state_bytes(opt))
                    for name, opt in optimizers.items()})
    mine = _share(writers, acc.process_index, acc.num_processes)
    try:
        _torch_save(rng_state(gen), tmp / f"rng-{acc.process_index}.pt")
        for name in mine:
            writers[name][0](tmp / name)
    except Exception as e:
        if acc.is_main_process or acc.num_processes == 1:
            shutil.rmtree(tmp, ignore_errors=True)
        raise disk_full(e, root.parent, sum(b for _, b in writers.values())) or e
    acc.wait_for_everyone()
    if acc.is_main_process:
        try:
            atomic_write_json(tmp / "config.json", config)
            atomic_write_json(tmp / "state.json", {"step": step, "num_processes": acc.num_processes,
                                                   "time": time.time(), "files": sorted(writers), **state})
        except Exception as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise disk_full(e, root.parent, 0) or e
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if limit > 0:
            for old in list_checkpoints(root)[:-limit]:
                shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return final


def _share(writers: dict, rank: int, world: int) -> list[str]:
    """The files process ``rank`` writes: largest first, each to the process with the least bytes so far."""
    load = [0] * world
    mine = []
    for name in sorted(writers, key=lambda n: (-writers[n][1], n)):
        who = load.index(min(load))
        load[who] += writers[name][1]
        if who == rank:
            mine.append(name)
    return mine


def _torch_save(obj, path: Path) -> None:
    """torch.save through a Python file, so a write error keeps its errno (a path gives a bare RuntimeError)."""
    with open(path, "wb") as f:
        torch.save(obj, f)


def disk_full(e: BaseException, out: Path, need: int, what: str = "a checkpoint") -> OSError | None:
    """An OSError naming the fix when ``e`` (or what it wraps) is a full disk or quota, else None. ``out``:
    the run folder (what ``--resume`` takes); ``what``: the thing being written."""
    seen = e
    while seen is not None:
        if (isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT)) or \
                "os error 28" in str(seen) or "No space left" in str(seen):
            free = shutil.disk_usage(out).free if out.exists() else 0
            return OSError(errno.ENOSPC, f"no space left on the disk of {out} ({what} needs "
                           f"{need / 1e9:.2f} GB, {free / 1e9:.2f} GB free): free space or keep fewer "
                           f"(--checkpoints-total-limit), then continue with sfv-train --resume {out}; "
                           f"the checkpoints written before are kept")
        seen = seen.__cause__ or seen.__context__
    return None


def state_dict_bytes(sd: dict) -> int:
    return sum(v.numel() * v.element_size() for v in sd.values() if torch.is_tensor(v))


def optimizer_state_bytes(opt) -> int:
    """Bytes of ``opt``'s state: its tensors, or before its first step what one step would create
    (the same optimiser class stepped once on meta copies of its parameters; nothing is allocated)."""
    if opt.state:
        return sum(v.numel() * v.element_size() for st in opt.state.values() for v in st.values()
                   if torch.is_tensor(v))
    groups = []
    for g in opt.param_groups:
        metas = [torch.nn.Parameter(torch.empty_like(p, device="meta")) for p in g["params"]]
        for m in metas:
            m.grad = torch.empty_like(m)
        groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": metas})
    try:
        twin = type(opt)(groups)
        twin.step()
    except Exception:  # noqa: BLE001 - an optimiser that cannot step on meta: its state is unknown here
        return 0
    return optimizer_state_bytes(twin) if twin.state else 0


def checkpoint_sizes(models: dict, optimizers: dict) -> dict:
    """File name -> bytes of one checkpoint (what ``save_checkpoint`` writes, RNG and JSON aside)."""
    out = {f"{k}.safetensors": state_dict_bytes(m.state_dict()) for k, m in models.items()}
    out.update({f"{k}.pt": optimizer_state_bytes(o) for k, o in optimizers.items()})
    return out


def load_checkpoint(ckpt: Path, acc, gen: torch.Generator, *, weights: dict, optimizers: dict) -> dict:
    """Restore a checkpoint written by ``save_checkpoint``; returns its state.json.

    ``weights``: name -> a function taking the loaded state dict; ``optimizers``: name -> optimiser."""
    state = _read(ckpt / "state.json", lambda p: json.loads(p.read_text()))
    check_processes(ckpt, state, acc.num_processes)
    for name, load in weights.items():
        load(_read(ckpt / f"{name}.safetensors", load_safetensors))
    for name, opt in optimizers.items():
        opt.load_state_dict(_read(ckpt / f"{name}.pt",
                                  lambda p: torch.load(p, map_location="cpu", weights_only=True)))
        # load_state_dict moves the state to each parameter's device
    set_rng_state(_read(ckpt / f"rng-{acc.process_index}.pt", lambda p: torch.load(p, weights_only=True)), gen)
    return state


def check_processes(ckpt: Path, state: dict, num_processes: int) -> None:
    """Refuse a resume with another process count: the global batch (processes x batch x micro-batches),
    the data order and each process's random state depend on it."""
    if int(state["num_processes"]) != num_processes:
        raise UserError(f"--resume: {ckpt} was written by {state['num_processes']} process(es), this run has "
                        f"{num_processes}: launch with {state['num_processes']} (the global batch, the data "
                        f"order and each process's random state depend on the count)")


def _read(path: Path, read):
    """``read(path)``; a failure is a UserError naming the file when the file is damaged (``file_damage``),
    else it propagates as it is (not the checkpoint's fault)."""
    try:
        return read(path)
    except Exception as e:
        why = file_damage(path)
        if why is None:
            raise
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"--resume: {path} is damaged ({why}: {first}); pass an older {CKPT_PREFIX}XXXXXX "
                        f"folder to --resume") from None


FILE_KINDS = {".pt": "torch.save", ".safetensors": "safetensors", ".json": "JSON"}


def file_damage(path: Path, check_members: bool = True) -> str | None:
    """Why one checkpoint file cannot be read back (missing, truncated, not its format), None when it is
    whole: a .safetensors covers its header, a .json parses, a .pt is a zip whose members pass their CRC
    (``check_members``: this reads the whole file; without it only the zip's directory is read)."""
    if not path.is_file():
        return "missing"
    try:
        if path.suffix == ".pt":
            with zipfile.ZipFile(path) as z:
                bad = z.testzip() if check_members else None
            return None if bad is None else f"member {bad} fails its CRC"
        if path.suffix == ".safetensors":
            with safe_open(str(path), "pt"):
                return None
        json.loads(path.read_text())
        return None
    except Exception:  # noqa: BLE001 - each format fails its own way
        return f"truncated or not a {FILE_KINDS.get(path.suffix, 'readable')} file"


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
    for path in [*sorted(ckpt.glob("*.safetensors")), *sorted(ckpt.glob("*.pt"))]:
        why = file_damage(path, check_members=False)
        if why:
            return f"{path.name}: {why}"
    return None


def remove_stale(root: Path, out: Path) -> list[str]:
    """Remove what a killed run leaves: unfinished checkpoints (``.tmp-step-*``), export and milestone copies."""
    gone = []
    copies = [p for folder in (out, out / MILESTONES) for p in [*folder.glob(".*-tmp"), *folder.glob(".*-old")]]
    for path in [*root.glob(f".tmp-{CKPT_PREFIX}*"), *copies]:
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            gone.append(str(path.relative_to(out)))
    return gone


def export_model(out: Path, acc, model, name: str, record: dict, final: Path | None = None) -> Path:
    """``final/<name>/`` (diffusers ``save_pretrained``, safetensors) and ``final/sfv_train.json``,
    replacing any previous one atomically (written as ``.<final>-tmp`` beside it). ``final``: default
    ``out/export``; a milestone is ``out/milestones/step-XXXXXX``. Returns ``final``."""
    final = final or out / "export"
    if acc.is_main_process:
        tmp, old = final.parent / f".{final.name}-tmp", final.parent / f".{final.name}-old"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            model.save_pretrained(tmp / name, safe_serialization=True)
            atomic_write_json(tmp / "sfv_train.json", record)
        except Exception as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise disk_full(e, out, state_dict_bytes(model.state_dict()), "the export") or e
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return final


def find_resume(resume: str, root: Path, compare) -> Path | None:
    """The checkpoint a run continues from, refusing bad situations before anything is written.

    ``resume``: '' (a fresh run: refused when ``root`` holds checkpoints), 'latest' (the newest intact
    checkpoint; each damaged newer one is a logged warning) or a checkpoint folder. ``compare(path)`` checks a
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
        ckpt = _newest_intact(existing)
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


def _newest_intact(existing: list[Path]) -> Path:
    damaged = []
    for ckpt in reversed(existing):
        why = damage(ckpt)
        if why is None:
            for bad, bad_why in damaged:
                log.warning(f"warning: checkpoint {bad} is damaged ({bad_why}); resuming from {ckpt.name}, "
                            f"the newest intact checkpoint")
            return ckpt
        damaged.append((ckpt, why))
    root = existing[0].parent
    shown = "; ".join(f"{c.name}/{w}" for c, w in damaged[:4])
    raise UserError(f"--resume: no intact checkpoint in {root} ({shown}), so no --resume checkpoints/"
                    f"{CKPT_PREFIX}XXXXXX can continue this run: restart it with another --out (or move "
                    f"{root} away)")
