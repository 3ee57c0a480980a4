"""The console: where the project's log messages go.

Every module logs through ``log = logging.getLogger(__name__)`` (``log.info`` for what a run tells its
user, ``log.warning`` for what needs a look). ``setup_console()``, called once by each command-line entry
point, sends the project's loggers to the terminal:

* INFO as the plain message on stdout, written above any tqdm progress bar (``tqdm.write``), so what a
  user reads is the message itself, nothing added; WARNING and above on stderr.
* the main process only: under ``torchrun`` / ``accelerate launch`` (env ``RANK``) the other processes
  stay quiet except for errors, unless ``SFV_LOG_RANKS=all`` (every process speaks; the lines of rank N > 0
  start with ``[rank N]``). Training says its progress once whatever this says: ``sfv-train`` logs through
  its main process only (``TrainLoop.log``), so ``SFV_LOG_RANKS=all`` adds only the other ranks' own lines.
* ``SFV_LOG_LEVEL`` (DEBUG, INFO, WARNING, ERROR; default INFO) sets how much is said.

Other libraries' loggers (diffusers, accelerate, torch) are left as they are. Without ``setup_console()``
(the project used as a library) messages follow the application's own logging configuration.
"""
from __future__ import annotations

import logging
import os
import sys

PACKAGES = ("bench", "methods", "sfv_core", "sfv_fvd", "sfv_lab", "sfv_train")   # the project's packages (their loggers)
LEVEL_ENV = "SFV_LOG_LEVEL"
RANKS_ENV = "SFV_LOG_RANKS"


def process_rank() -> int:
    """This process's rank among those ``torchrun`` / ``accelerate launch`` started (0 when alone)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


class ConsoleHandler(logging.Handler):
    """INFO and below to the current ``sys.stdout``, WARNING and above to the current ``sys.stderr`` (looked up
    at each message, so a redirected stream is honoured), above any progress bar; the main process only
    unless ``SFV_LOG_RANKS=all``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or process_rank() == 0:
            return super().filter(record)
        return os.environ.get(RANKS_ENV, "main") == "all" and super().filter(record)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rank = process_rank()
        return f"[rank {rank}] {text}" if rank else text

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm.auto import tqdm

            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            tqdm.write(self.format(record), file=stream)
            stream.flush()
        except Exception:  # noqa: BLE001 - logging's own rule: a message never stops the program
            self.handleError(record)


def _level() -> int:
    name = os.environ.get(LEVEL_ENV, "INFO").upper()
    level = logging.getLevelName(name)
    return level if isinstance(level, int) else logging.INFO


def setup_console() -> None:
    """Route the project's loggers to the console (idempotent: a second call changes only the level)."""
    level = _level()
    for name in PACKAGES:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
            handler = ConsoleHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
