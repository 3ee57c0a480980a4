"""TrainLoop.log: a console line through `logging` from the main process."""
from __future__ import annotations

import logging
from types import SimpleNamespace

from sfv_train.loop import TrainLoop


class _Cfg:
    out = "unused"

    def resolved(self):
        return self


def test_the_loop_logs_through_logging_from_the_main_process_only(caplog):
    loop = TrainLoop(_Cfg())
    with caplog.at_level(logging.INFO, logger="sfv_train.loop"):
        loop.log("step 1: loss 0.5")
        loop.log("warning: little disk left", logging.WARNING)
        loop.acc = SimpleNamespace(is_main_process=False)
        loop.log("from another process")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("sfv_train.loop", logging.INFO, "step 1: loss 0.5"),
        ("sfv_train.loop", logging.WARNING, "warning: little disk left")]

