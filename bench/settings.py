"""What `sfv-bench run` was asked to do, resolved and checked before any work starts.

A run folder holds one protocol, dataset selection, detector, device type, dtype and sample size
(``run.json``: a later call with other values is refused, naming them); methods accumulate in it:
each method's samples carry their own identity (``samples/<spec>/method.json``: options and the
sha256 of the weights), so adding a method, or re-running one with new weights, touches only that
method's samples and record.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path

import torch

from methods.models.variants import parse_variant
from methods.registry import parse_method_options, parse_specs
from sfv_core.env import resolve_device, usable_cores
from sfv_core.errors import UserError
from sfv_core.fsutil import atomic_write_json, folder_lock, sha256_json
from sfv_core.paper import DEFAULT_SPECS
from sfv_core.protocol import WORLDS, Protocol
from sfv_core.typed_config import validate

from .run_config import RunConfig


class Settings:
    """Everything that changes a run's numbers, resolved from the run's options (a ``RunConfig``, or the
    namespace `sfv-bench run`'s parser gives: validated into one)."""

    def __init__(self, args):
        cfg = validate(RunConfig, _fields_of(args), "sfv-bench run")     # a RunConfig built in code too
        self.world = _world(cfg)
        self.device = resolve_device(cfg.device)
        self.dtype = cfg.dtype or ("float16" if self.device.startswith("cuda") else "float32")
        self.torch_dtype = getattr(torch, self.dtype)
        _check_ranges(cfg)
        self.protocol = _protocol(self.world, cfg)
        self._resolve_methods(cfg)
        self.stack = cfg.stack or self.world.stack
        self.xt_stack = cfg.xt_stack or self.world.xt_stack
        self.variant = parse_variant(cfg.variant)
        self.detector = cfg.detector or self.world.detector
        self.trust_detector = cfg.trust_detector
        self.batch_size = cfg.batch_size or self.world.batch_size
        self.fvd_batch_size = cfg.fvd_batch_size
        self.save_size = cfg.save_size
        self.previews = not cfg.no_previews
        self.data = str(Path(cfg.data).expanduser().resolve()) if cfg.data else None
        self.redo_latency = cfg.redo_latency
        self.timing_videos = cfg.timing_videos
        self.threads = cfg.threads
        self.procs = self._procs(cfg.procs)
        self.argv = getattr(args, "argv", None)          # the command line `--procs K` starts K times
        self.out_arg = cfg.out
        self._held = contextlib.ExitStack()

    def _resolve_methods(self, cfg: RunConfig) -> None:
        """The methods (default: the world's, with the mini world's shipped distilled rows), their options
        (``--method-option`` and the ``--NAME-unet`` flags, one parser) and ``--force``."""
        if cfg.methods and not ",".join(cfg.methods).strip(", "):
            raise UserError("--methods is empty: give method specs such as svd:25,sfv:1 (`sfv-bench ls` lists them)")
        self.options = parse_method_options(cfg.unet_options())
        shipped = _mini_unets(self.world, self.options) if self.world.name == "mini" else []
        if cfg.methods:
            self.method_text = ",".join(cfg.methods)
        else:
            self.method_text = ",".join([self.world.methods] + shipped) if self.world.methods else DEFAULT_SPECS
        self.specs = parse_specs(self.method_text)           # a spec given twice is refused there
        frames = cfg.animatelcm_frames or self.world.animatelcm_frames or self.protocol.num_frames
        self.options.setdefault("animatelcm", {}).setdefault("gen_frames", frames)
        self.force = set(parse_specs(",".join(cfg.force)) if cfg.force else ())
        stray = sorted(s.key for s in self.force - set(self.specs))
        if stray:
            raise UserError(f"--force {','.join(stray)}: not among the methods of this run "
                            f"({self.method_text}); add it to --methods or drop it from --force")

    def _procs(self, asked) -> int:
        """Local processes: on a CPU the mini world runs one per core (up to 4): small models give each
        thread little work per op, so K one-thread processes outrun one K-thread process."""
        cpu = not self.device.startswith("cuda")
        if asked and asked > 1 and not cpu:
            raise UserError("--procs is for a CPU; on several GPUs run `torchrun --nproc_per_node K -m bench run ...` "
                            "or `accelerate launch $(which sfv-bench) run ...`")
        if asked:
            return asked
        return min(usable_cores(), 4) if cpu and self.world.name == "mini" else 1

    @property
    def synthetic(self) -> bool:
        return self.world.dataset is not None

    def stack_for(self, spec) -> str:
        return self.xt_stack if spec.name == "animatelcm" else self.stack

    def shared_settings(self, refs) -> dict:
        """The run-level settings a later call into the same folder must share (run.json; the default
        folder's name hashes them)."""
        selection = sha256_json([[r.rel, r.path.stat().st_size if r.path.exists() else None] for r in refs])
        return {"protocol": self.protocol.to_dict(), "world": self.world.name,
                "data": {"root": self.data or f"synthetic {self.world.dataset}", "selection_sha256": selection},
                "detector": self.detector, "device_type": self.device.split(":")[0], "dtype": self.dtype,
                "save_size": self.save_size}

    def out_dir(self, refs, lock: bool = False) -> Path:
        """The run folder, made if needed; ``lock``: hold its lock (``sfv_core.fsutil.folder_lock``) until
        ``release()``, so a second run into the same folder is refused instead of overwriting this one's rows."""
        out = self._out_dir(refs)
        if lock:
            self._held.enter_context(folder_lock(out, "sfv-bench run"))
        return out

    def release(self) -> None:
        self._held.close()

    def _out_dir(self, refs) -> Path:
        if self.out_arg:
            out = Path(self.out_arg).expanduser()
        else:
            out = Path("runs") / f"{self.world.name}-{sha256_json(self.shared_settings(refs))[:10]}"
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file: pass a folder for the run")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--out {out}: cannot create the folder ({e.strerror})") from None
        if not os.access(out, os.W_OK):
            raise UserError(f"--out {out} is not writable: pass another folder")
        return out


def check_run_json(out: Path, key: dict, dist) -> None:
    """Refuse a run folder made with other run-level settings; write run.json."""
    path = out / "run.json"
    if path.exists():
        try:
            old = json.loads(path.read_text()).get("settings", {})
        except (OSError, ValueError, AttributeError):
            raise UserError(f"{path} is damaged: delete it (the samples are kept and checked) or pass another "
                            f"--out") from None
        diff = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
        if diff:
            raise UserError(f"{out} holds a run with other settings ({', '.join(diff)}); "
                            f"pass another --out or delete the folder")
    dist.barrier()
    if dist.main:
        atomic_write_json(path, {"settings": key, "argv": sys.argv[1:]})


def _fields_of(args) -> dict:
    """The run's option values, from a RunConfig or from the parser's namespace."""
    if isinstance(args, RunConfig):
        return {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)}
    names = {f.name for f in dataclasses.fields(RunConfig)}
    return {k: v for k, v in vars(args).items() if k in names}


def _world(cfg: RunConfig):
    """--world; default: mini, or ucf101 with --data. --world with --data: that world's models and protocol on
    another dataset in UCF-101's layout (`sfv-bench study` scores the mini world's validation clips so)."""
    return WORLDS[cfg.world or ("ucf101" if cfg.data else "mini")]


def _check_ranges(cfg: RunConfig) -> None:
    for name, low in (("seed", 0), ("batch_size", 1), ("fvd_batch_size", 1), ("timing_videos", 1),
                      ("threads", 0), ("num_videos", 2), ("procs", 1)):
        value = getattr(cfg, name)
        if value is not None and value < low:
            why = " (an FVD compares the covariances of N videos)" if name == "num_videos" else ""
            raise UserError(f"--{name.replace('_', '-')} must be >= {low}{why} (got {value})")


def _protocol(world, cfg: RunConfig) -> Protocol:
    """The world's protocol with the selection options given."""
    given = {k: v for k, v in dict(split=cfg.split, fold=cfg.fold, num_videos=cfg.num_videos, balanced=cfg.balanced,
                                   seed=cfg.seed, max_fail_frac=cfg.max_fail_frac).items() if v is not None}
    try:
        return Protocol(**{**world.protocol, **given})
    except ValueError as e:
        raise UserError(str(e)) from None


def _mini_unets(world, options: dict) -> list[str]:
    """The mini world's distilled rows that ship (``world.optional_methods`` whose unets/<name> exists),
    with that UNet as the method's default ``unet`` option."""
    from methods.models.mini import has, verified

    specs = []
    for spec in world.optional_methods.split(","):
        fam = spec.split(":")[0]
        if has(f"unets/{fam}"):
            options.setdefault(fam, {}).setdefault("unet", str(verified(f"unets/{fam}")))   # sha256-checked
            specs.append(spec)
    return specs
