"""``sfv-train``'s entry: the trainer class of each ``--method`` and one call that trains and exports."""
from __future__ import annotations

from .config import TrainConfig
from .lcm import LCMTrainer
from .trainer import Trainer


def trainer_class(method: str) -> type[Trainer]:
    """The trainer of ``--method``: sfv / ufogen / ladd -> Trainer, lcm -> LCMTrainer."""
    return LCMTrainer if method == "lcm" else Trainer


def train(cfg: TrainConfig) -> Trainer:
    """Train (and export), with the FVD while training (sfv_train.evaluation) when ``cfg.fvd_every`` > 0."""
    t = trainer_class(cfg.method)(cfg)
    t.run()
    return t
