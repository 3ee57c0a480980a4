"""The configuration every ``TrainLoop`` trainer shares (the mini world's trainers extend it; the
adversarial ``TrainConfig`` carries the same fields with their command-line help)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from sfv_core.errors import UserError

# Options that do not change the trained weights: they may differ between a run and its resume.
LOOP_RUN_ONLY = {"out", "resume", "max_steps", "checkpoint_every", "checkpoints_total_limit", "log_every",
                 "preview_every", "device", "report_to", "progress"}


@dataclass
class LoopConfig:
    out: str = ""
    resume: str = ""                  # "" | latest | a checkpoint folder
    max_steps: int = 1000
    seed: int = 0
    device: str = "auto"
    mixed_precision: str = "no"       # no | bf16 | auto (bf16 on CUDA)
    report_to: str = "auto"
    progress: bool = True
    log_every: int = 50
    checkpoint_every: int = 500
    checkpoints_total_limit: int = 2
    preview_every: int = 0

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
        return {k: v for k, v in self.to_dict().items() if k not in LOOP_RUN_ONLY}
