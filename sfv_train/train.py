"""``sfv-train``'s entry: the trainer class of each ``--method`` and one call that trains and exports."""
from __future__ import annotations

from .config import TrainConfig
from .lcm import LCMTrainer
from .trainer import Trainer


def trainer_class(method: str) -> type[Trainer]:
    """The trainer of ``--method``: sfv / ufogen / ladd -> Trainer, lcm -> LCMTrainer."""
    return LCMTrainer if method == "lcm" else Trainer


def train(cfg: TrainConfig, log=None, evaluator=None) -> Trainer:
    """Train (and export); ``evaluator``: the FVD-while-training factory (sfv_train.evaluation)."""
    t = trainer_class(cfg.method)(cfg, log=log)
    t.evaluator = evaluator
    t.run()
    return t
