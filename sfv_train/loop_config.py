"""The options every ``TrainLoop`` trainer shares (run folder, resume, length, cadence, device), declared
once with their command-line help: ``sfv-train``'s ``TrainConfig`` and the mini world's trainer configs
extend this class. Fields marked ``run_only`` do not change the trained weights: a resume may change them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sfv_core.errors import UserError
from sfv_core.typed_config import option, run_only_fields

MixedPrecision = Literal["auto", "no", "bf16"]
Tracker = Literal["auto", "tensorboard", "none"]


@dataclass
class LoopConfig:
    out: str = option("", "run folder (checkpoints, export, logs, previews)", "run", run_only=True)
    resume: str = option("", "continue a run: alone (with --out) or with a run folder: from its newest intact "
                         "checkpoint, with the run's config.json as defaults (change only run options such as "
                         "--max-steps); with a checkpoint folder: from that checkpoint", "run", run_only=True,
                         nargs="?", const="latest", metavar="OUT|CKPT")
    max_steps: int = option(1000, "optimisation steps (the run ends there)", "run", run_only=True)
    seed: int = option(0, "heads init, noise, data order, conditioning noise", "run")
    device: str = option("auto", "auto | cpu | cuda[:N] (under accelerate launch: set by accelerate)", "run",
                         run_only=True)
    mixed_precision: MixedPrecision = option("no", "bf16 autocast (auto: on CUDA only)", "optimisation")
    report_to: Tracker = option("auto", "accelerate tracker (auto: tensorboard when installed)", "output",
                                run_only=True)
    progress: bool = option(True, "no progress bar", "output", run_only=True, flag="--no-progress", negate=True)
    log_every: int = option(50, "steps between log lines / tracker points", "output", run_only=True)
    checkpoint_every: int = option(500, "steps between checkpoints (and at the end)", "output", run_only=True)
    checkpoints_total_limit: int = option(2, "keep the newest K checkpoints (0: all); the start-up log says what "
                                          "one weighs (18.7 GB at full size with SM3)", "output", run_only=True)
    preview_every: int = option(0, "0: no preview videos", "output", run_only=True)

    def resolved(self):
        if not self.out:
            raise UserError("an output folder (out) is required")
        if self.max_steps < 1 or self.log_every < 1 or self.checkpoint_every < 1:
            raise UserError("max_steps, log_every and checkpoint_every must be >= 1")
        c = dataclasses.replace(self)
        c.out = str(Path(c.out).expanduser())
        return c

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def compared(self) -> dict:
        """The values a resumed run must share with the run it continues (all but the run-only options)."""
        return {k: v for k, v in self.to_dict().items() if k not in run_only_fields(type(self))}


def loop_option(name: str, default):
    """A ``LoopConfig`` option with another default in a trainer's config (its help and flags kept)."""
    return dataclasses.field(default=default, metadata=LoopConfig.__dataclass_fields__[name].metadata)
