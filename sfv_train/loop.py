"""The loop every trainer shares: accelerate, the run folder, exact resume, logs, progress, export.

A trainer subclasses ``TrainLoop`` and implements ``build()`` (data, models, optimisers, once the
accelerator exists), ``train_step()`` (one optimisation step -> metrics), ``checkpoint_parts()`` (what a
checkpoint holds) and ``export()``; optionally ``preview()``. The configuration is a dataclass with ``out``,
``resume``, ``max_steps``, ``seed``, ``device``, ``report_to``, ``progress``, ``log_every``,
``checkpoint_every``, ``checkpoints_total_limit``, ``preview_every``, a ``resolved()`` (defaults,
validation) and ``compared()`` (what a resume must share). With ``fvd_every`` > 0 in the configuration, a
trainer that implements ``sample_videos()`` is scored with FVD while it trains (``sfv_train.evaluation``).

Run folder::

    config.json                   the resolved configuration (compared on --resume)
    checkpoints/step-XXXXXX/      weights .safetensors, optimiser .pt, rng-<rank>.pt, state.json,
                                  config.json -- written to .tmp-step-XXXXXX, then renamed
    export/                       the result (a diffusers model folder + sfv_train.json)
    milestones/step-XXXXXX/       exports kept every ``milestone_every`` steps (when the config has it),
                                  beside the newest ``checkpoints_total_limit`` checkpoints
    previews/                     what the trainer previews (videos)
    logs/<name>/                  TensorBoard events (accelerate tracker): one folder per run, a resume
                                  appends (events past the resumed step are purged)
    logs/metrics.jsonl            the logged metrics, one JSON line per logged step (a resume drops
                                  the lines past its step); FVD evaluations have their own lines
    fvd_vs_step.png, fvd_best.json  FVD while training (sfv_train.evaluation), when on

A start removes what a killed run left (``.tmp-step-*``, ``.export-tmp``) and says so, and logs what one
checkpoint weighs. The processes wait for each other at most ``process_group_timeout`` seconds in any
collective (accelerate's ``InitProcessGroupKwargs``; 1800 s when the config has no such field). The tracker
gets the metrics under ``tracker_names`` (``grad_norm_x`` -> ``grad_norm/x``), each optimiser's learning
rate (``optimizer_x`` -> ``lr/x``), the mean step time (``time/step_s``) and the previews (TensorBoard
"videos": an animated GIF in an image summary, add_video's format, encoded with Pillow: no moviepy).
"""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

from sfv_core.env import PROCESS_GROUP_TIMEOUT_S
from sfv_core.errors import UserError
from sfv_core.fsutil import atomic_write_json, atomic_write_text, folder_lock
from sfv_core.logs import process_rank

from .checkpoint import (CKPT_PREFIX, MILESTONES, check_processes, checkpoint_sizes, find_resume, load_checkpoint,
                         remove_stale, save_checkpoint, state_dict_bytes)
from .evaluation import fvd_due

log = logging.getLogger(__name__)


def _tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
        return True
    except ImportError:
        return False


def gif_summary(tag: str, frames: np.ndarray, fps: float):
    """A TensorBoard image summary holding an animated GIF of uint8 (T, H, W, 3) frames: what
    SummaryWriter.add_video writes, without its moviepy dependency (TensorBoard's Images tab plays it)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    from sfv_core.data.videoio import gif_bytes

    image = Summary.Image(height=frames.shape[1], width=frames.shape[2], colorspace=3,
                          encoded_image_string=gif_bytes(frames, fps))
    return Summary(value=[Summary.Value(tag=tag, image=image)])


def diff_keys(old: dict, new: dict) -> list[str]:
    return [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


class TrainLoop:
    name = "train"                     # tracker: logs/<name>/
    desc = ""                          # progress bar (default: name)
    postfix: tuple = ()                # metrics shown on the progress bar
    tracker_names: dict = {}           # metric -> tracker tag (else by prefix, else itself)
    tracker_prefixes: dict = {"grad_norm_": "grad_norm/"}       # grad_norm_x -> grad_norm/x

    def __init__(self, cfg):
        self.cfg = cfg.resolved()
        self.fvd = None
        self.out = Path(self.cfg.out).expanduser()
        self.ckpt_root = self.out / "checkpoints"
        self.step = 0
        self.acc = None
        self.pbar = None
        self.writer = None             # the TensorBoard SummaryWriter, when tracking

    # -- to implement ---------------------------------------------------------------------------
    def build(self) -> None:
        raise NotImplementedError

    def train_step(self) -> dict:
        raise NotImplementedError

    def checkpoint_parts(self) -> tuple[dict, dict]:
        """({name: module with state_dict/load_state_dict}, {name: optimiser})."""
        raise NotImplementedError

    def export(self) -> Path:
        raise NotImplementedError

    def preview(self) -> Path | None:
        return None

    def sample_videos(self, images, seeds, conditions):
        """uint8 videos (B, T, H, W, 3) of the trained generator from conditioning images, one seed each,
        for the FVD while training (``sfv_train.evaluation``); not implemented: no evaluation."""
        raise NotImplementedError

    def checkpoint_state(self) -> dict:
        """Extra entries of state.json."""
        return {}

    # -- infrastructure -------------------------------------------------------------------------
    def log(self, msg: str, level: int = logging.INFO) -> None:
        """A console line from the main process (``logging``; above the progress bar)."""
        if self.acc is not None and not self.acc.is_main_process:
            return
        log.log(level, msg)

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _compare_config(self, path: Path) -> None:
        if not path.is_file():
            return
        from .config import read_config_json

        cls = type(self.cfg)
        old = cls(**{k: v for k, v in read_config_json(path).items() if k in cls.__dataclass_fields__}).compared()
        new = self.cfg.compared()
        diff = diff_keys(old, new)
        if diff:
            shown = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in diff[:6])
            raise UserError(f"--resume: {path} was written with another configuration; differing: {shown}. "
                            f"A resume may change only run options (--max-steps, --checkpoint-every, ...): "
                            f"drop the others, or start a new run with another --out")

    def setup(self) -> None:
        """Check the run folder, start accelerate, build, resume, write config.json, start the tracker."""
        device, tracker = self._checked_options()
        if getattr(self, "_held", None) and process_rank() == 0:   # run(), the options sound: hold the folder
            self.out.mkdir(parents=True, exist_ok=True)
            self._held.enter_context(folder_lock(self.out, "sfv-train"))
        resume_from = find_resume(self.cfg.resume, self.ckpt_root, self._compare_config)
        if resume_from is None and self.cfg.resume:
            self.log(f"--resume: no checkpoint in {self.ckpt_root} yet, starting from step 0")
        self._start_accelerator(device, tracker)
        self._clean_run_folder(resume_from)
        self._build_and_resume(resume_from)
        self.log_checkpoint_size()
        if self.acc.is_main_process:
            atomic_write_json(self.out / "config.json", self.cfg.to_dict())
            self.trim_metrics()
        if tracker != "none":
            self._start_tracker(tracker)
        if getattr(self.cfg, "fvd_every", 0) > 0 and self.acc.is_main_process:
            self._start_fvd()

    def _checked_options(self) -> tuple[str, str]:
        """(the device, the tracker: 'tensorboard' or 'none'), refused before anything starts when unusable."""
        from sfv_core.env import resolve_device

        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out {self.out} is a file, not a run folder: choose another --out")
        device = resolve_device(self.cfg.device)
        tracker = self.cfg.report_to
        if tracker == "auto":
            tracker = "tensorboard" if _tensorboard_available() else "none"
        if tracker == "tensorboard" and not _tensorboard_available():
            raise UserError("--report-to tensorboard needs the tensorboard package (pip install tensorboard) "
                            "or use --report-to none")
        return device, tracker

    def _start_accelerator(self, device: str, tracker: str) -> None:
        """The Accelerator, its collectives waiting at most the configured process-group timeout."""
        from accelerate import Accelerator
        from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration

        if device.startswith("cuda:"):
            torch.cuda.set_device(device)
        timeout = timedelta(seconds=getattr(self.cfg, "process_group_timeout", PROCESS_GROUP_TIMEOUT_S))
        self.acc = Accelerator(
            cpu=device == "cpu", mixed_precision="no", log_with=None if tracker == "none" else tracker,
            project_config=ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.out / "logs")),
            kwargs_handlers=[InitProcessGroupKwargs(timeout=timeout)])

    def _clean_run_folder(self, resume_from: Path | None) -> None:
        """Refuse another process count than the checkpoint's (before anything is built); remove what a
        killed run left (main process), said once."""
        if resume_from is not None:
            check_processes(resume_from, json.loads((resume_from / "state.json").read_text()),
                            self.acc.num_processes)
        if self.acc.is_main_process:
            gone = remove_stale(self.ckpt_root, self.out)
            if gone:
                self.log(f"removed what an interrupted run left: {', '.join(gone)}")
        self.acc.wait_for_everyone()

    def _build_and_resume(self, resume_from: Path | None) -> None:
        """This process's device, precision, rank and generator; the trainer's ``build()``; the checkpoint's
        state loaded when resuming."""
        precision = getattr(self.cfg, "mixed_precision", "no")
        self.device = self.acc.device
        self.bf16 = precision == "bf16" or (precision == "auto" and self.device.type == "cuda")
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        self.gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + 1 + self.rank)
        self.build()
        if resume_from is not None:
            models, opts = self.checkpoint_parts()
            state = load_checkpoint(resume_from, self.acc, self.gen, optimizers=opts,
                                    weights={k: m.load_state_dict for k, m in models.items()})
            self.step = int(state["step"])
            self.log(f"resumed from {resume_from} (step {self.step})")

    def _start_tracker(self, tracker: str) -> None:
        """logs/<name>/, the same folder on every resume (events past the resumed step are purged); the
        configuration as its first text entry."""
        self.acc.init_trackers(self.name, init_kwargs={tracker: {"purge_step": self.step + 1}})
        if self.acc.is_main_process:
            self.writer = self.acc.get_tracker(tracker, unwrap=True)
            text = json.dumps(self.cfg.to_dict(), indent=1).replace("\n", "\n    ")
            self.writer.add_text("config", "    " + text, global_step=self.step)

    def _start_fvd(self) -> None:
        """The FVD while training (main process), when the trainer can sample."""
        if type(self).sample_videos is TrainLoop.sample_videos:
            self.log(f"FVD evaluation: {type(self).__name__} cannot sample videos (no sample_videos); skipped")
        else:
            from .evaluation import FVDMonitor
            self.fvd = FVDMonitor.start(self)

    def save_checkpoint(self) -> Path:
        """Write a checkpoint; warn when writing it took more than half the process-group timeout (the
        processes wait for each other at its barriers)."""
        models, opts = self.checkpoint_parts()
        start = time.perf_counter()
        path = save_checkpoint(self.ckpt_root, self.step, self.acc, self.gen, optimizers=opts,
                               weights={k: m.state_dict() for k, m in models.items()}, config=self.cfg.to_dict(),
                               state=self.checkpoint_state(), limit=self.cfg.checkpoints_total_limit)
        took = time.perf_counter() - start
        timeout = getattr(self.cfg, "process_group_timeout", PROCESS_GROUP_TIMEOUT_S)
        if self.world > 1 and took > timeout / 2:
            self.log(f"warning: writing {path.name} took {took:.0f} s, more than half of --process-group-timeout "
                     f"{timeout} s: raise it, or the processes may time out waiting for each other", logging.WARNING)
        return path

    def log_checkpoint_size(self) -> None:
        """What one checkpoint weighs, what the run keeps, and the free space of OUT's disk."""
        if not self.acc.is_main_process:
            return
        sizes = checkpoint_sizes(*self.checkpoint_parts())
        total, keep = sum(sizes.values()), self.cfg.checkpoints_total_limit
        parts = ", ".join(f"{k} {v / 1e9:.2f}" for k, v in sizes.items())
        kept = f"the newest {keep} ({keep * total / 1e9:.1f} GB)" if keep else "all of them"
        every = getattr(self.cfg, "milestone_every", 0)
        if every:
            unet = self.export_unet() if hasattr(self, "export_unet") else None
            weight = f" ({state_dict_bytes(unet.state_dict()) / 1e9:.2f} GB each)" if unet is not None else ""
            kept += f" + a milestone export every {every} steps{weight}"
        where = next(p for p in (self.out, *self.out.absolute().parents) if p.exists())
        free = shutil.disk_usage(where).free
        self.log(f"one checkpoint weighs {total / 1e9:.2f} GB ({parts} GB); keeping {kept}; "
                 f"{free / 1e9:.0f} GB free on the disk of {self.out}")
        if keep and free < keep * total:
            self.log(f"warning: {self.out}'s disk has less free space than {keep} checkpoints need: free space, "
                     f"or a lower --checkpoints-total-limit", logging.WARNING)

    def save_milestone(self) -> Path | None:
        """The export, kept as out/milestones/step-XXXXXX (a trainer whose export takes ``final``)."""
        return self.export(final=self.out / MILESTONES / f"{CKPT_PREFIX}{self.step:06d}")

    def mean_over_processes(self, m: dict) -> dict:
        """Each metric averaged over the processes that logged it (a process may lack a key: a sigma' bucket
        with no video there)."""
        if self.world == 1:
            return m
        from accelerate.utils import gather_object

        keys = sorted({k for ks in gather_object([sorted(m)]) for k in ks})
        vals = torch.tensor([[m.get(k, 0.0), float(k in m)] for k in keys], device=self.device, dtype=torch.float64)
        v = self.acc.reduce(vals, "sum")
        return {k: float(s / n) for k, (s, n) in zip(keys, v.tolist())}

    def trim_metrics(self) -> None:
        """Drop the metrics.jsonl lines past the current step (a resume logs them again) and broken lines."""
        path = self.out / "logs" / "metrics.jsonl"
        if not path.is_file():
            return
        lines = path.read_text().splitlines()
        keep = []
        for line in lines:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                if json.loads(line)["step"] <= self.step:
                    keep.append(line)
        if len(keep) < len(lines):
            atomic_write_text(path, "".join(line + "\n" for line in keep))
            self.log(f"logs/metrics.jsonl: dropped {len(lines) - len(keep)} line(s) past step {self.step}")

    def tracked(self, m: dict, step_s: float) -> dict:
        """What the tracker gets for a logged step: grouped metrics, learning rates, step time."""
        def tag(k: str) -> str:
            if k in self.tracker_names:
                return self.tracker_names[k]
            pre = next((p for p in self.tracker_prefixes if k.startswith(p)), None)
            return self.tracker_prefixes[pre] + k[len(pre):] if pre else k

        out = {tag(k): v for k, v in m.items()}
        for name, opt in self.checkpoint_parts()[1].items():
            out[f"lr/{name.removeprefix('optimizer_')}"] = opt.param_groups[0]["lr"]
        out["time/step_s"] = step_s
        return out

    def track_video(self, path: Path | None) -> None:
        """A preview video (T, H, W, 3 uint8 file) into TensorBoard; skipped quietly when that cannot work."""
        if self.writer is None or path is None:
            return
        from sfv_core.data.videoio import read_video, video_info

        try:
            summary = gif_summary("preview", read_video(path), video_info(path)[1])
            self.writer._get_file_writer().add_summary(summary, self.step)
        except Exception as e:  # noqa: BLE001 - a preview must never stop training
            self.log(f"TensorBoard preview of {path.name} skipped: {str(e).splitlines()[0][:120]}")

    def append_metrics(self, m: dict) -> None:
        """One JSON line per logged step in out/logs/metrics.jsonl (main process)."""
        if self.acc.is_main_process:
            path = self.out / "logs" / "metrics.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                f.write(json.dumps({"step": self.step, **m}) + "\n")

    def clip_grad(self, params, max_norm: float = 0.0) -> float:
        params = [p for p in params if p.grad is not None]
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf")))

    def run(self) -> Path:
        """Train to ``max_steps`` (checkpointing, logging, previewing on the way), then export; the main process
        holds the run folder's lock throughout (a second sfv-train into the same --out is refused)."""
        with contextlib.ExitStack() as self._held:
            return self._train()

    def _train(self) -> Path:
        from tqdm.auto import tqdm

        self.setup()
        cfg, acc = self.cfg, self.acc
        self.history: list[dict] = []
        self.pbar = tqdm(total=cfg.max_steps, initial=self.step, desc=self.desc or self.name,
                         disable=not (cfg.progress and acc.is_main_process), dynamic_ncols=True, file=sys.stdout)
        times: list[float] = []
        try:
            while self.step < cfg.max_steps:
                start = time.perf_counter()
                m = self.mean_over_processes(self.train_step())
                times.append(time.perf_counter() - start)
                self.history.append({"step": self.step, **m})
                for k, v in m.items():
                    if not np.isfinite(v):
                        raise FloatingPointError(f"non-finite {k} = {v} at step {self.step}")
                self.pbar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    acc.log(self.tracked(m, float(np.mean(times))), step=self.step)
                    times.clear()
                    self.append_metrics(m)
                    self.pbar.set_postfix({k: f"{m[k]:.3g}" for k in self.postfix if k in m})
                    self.log(f"step {self.step}: " + " ".join(f"{k} {v:.4g}" for k, v in m.items()))
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.max_steps:
                    self.save_checkpoint()
                if getattr(cfg, "milestone_every", 0) and self.step % cfg.milestone_every == 0:
                    self.save_milestone()
                if cfg.preview_every and self.step % cfg.preview_every == 0:
                    self.track_video(self.preview())
                if fvd_due(cfg, self.step):         # main process only; the others wait
                    if self.fvd is not None:
                        self.fvd(self.step)
                    acc.wait_for_everyone()
        finally:
            self.pbar.close()
            self.pbar = None
        path = self.export()
        acc.end_training()
        return path
