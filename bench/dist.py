"""Data-parallel helpers for `torchrun` / `accelerate launch` (env RANK / WORLD_SIZE / LOCAL_RANK), on top of
accelerate's ``PartialState``: ``shard`` splits a list in contiguous blocks (rank 0 first, so gathering in rank
order restores the list order), ``deal`` shares a list out round robin (the samples left to make: every
process gets an equal part, whatever the number of processes that made the rest), ``gather_object`` /
``reduce`` combine results.

One process: accelerate is not initialised and every function is a no-op (gloo on CPU, nccl on CUDA otherwise).
``torchrun`` starts K such processes on this machine (what `sfv-bench run --procs K` does on a CPU).

Waiting: every collective of a run (barriers included) gives up after ``timeout()`` (default 1800 s, or
``SFV_DIST_TIMEOUT_S`` seconds), passed explicitly to ``init_process_group`` (``PartialState(timeout=...)``,
what accelerate's ``InitProcessGroupKwargs`` sets), for gloo and NCCL alike. No process waits for a whole
share of another's work: the samples left are dealt evenly (a process waits for at most one generation batch
of another's), and the timing pass (rank 0 alone) is waited for one piece at a time (``main_alone``: one video,
or one pass timing, per collective). Making a synthetic dataset and the real statistics' cache file are rank
0's alone too: minutes at most.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import tempfile
from pathlib import Path

import torch

from sfv_core.env import PROCESS_GROUP_TIMEOUT_S
from sfv_core.errors import UserError

log = logging.getLogger(__name__)


def timeout() -> datetime.timedelta:
    """The process-group timeout: ``SFV_DIST_TIMEOUT_S`` seconds, default ``PROCESS_GROUP_TIMEOUT_S``."""
    text = os.environ.get("SFV_DIST_TIMEOUT_S") or str(PROCESS_GROUP_TIMEOUT_S)
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise UserError(f"SFV_DIST_TIMEOUT_S must be a number of seconds > 0 (got {text!r})")
    return datetime.timedelta(seconds=seconds)


def _exit_code(code: int) -> int:
    return 128 - code if code < 0 else code          # killed by signal N: 128 + N, as a shell says


def torchrun(k: int, cmd: list, threads: int) -> int:
    """Run ``cmd`` (``[python, -m, bench, ARGV]``) as ``k`` local processes under torchrun
    (``torch.distributed.run --standalone --nproc-per-node k``; gloo on a CPU), each with ``threads`` torch
    threads (``OMP_NUM_THREADS`` if set), and wait. Rank 0 writes to our stdout and stderr; the others write
    to per-rank log files (``--redirects``), shown (their last lines) only when one of them fails while rank
    0 did not say why. torchrun stops the others at the first failure and on SIGTERM / SIGINT. Returns
    the exit code of the process that failed (rank 0's if it did; 0 when none did; 128 + N for signal N)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    root = str(Path(__file__).resolve().parents[1])   # the children import this checkout, not a folder named bench
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads)), "PYTHONSAFEPATH": "1",
           "PYTHONPATH": os.pathsep.join(x for x in (root, os.environ.get("PYTHONPATH")) if x)}
    with tempfile.TemporaryDirectory(prefix="sfv-torchrun-") as logs, _quiet("torch.distributed"), _environ(env):
        others = ",".join(f"{r}:3" for r in range(1, k))
        args = get_args_parser().parse_args(
            ["--standalone", "--nproc-per-node", str(k), "--log-dir", logs, "--monitor-interval", "0.2",
             *(["--redirects", others] if others else []), "--no-python", *map(str, cmd)])
        try:
            run(args)
            return 0
        except ChildFailedError as e:
            return _report(e.failures, k, Path(logs))
        except SignalException as e:
            return 128 + int(e.sigval)
        except KeyboardInterrupt:
            return 130


def _report(failures: dict, k: int, logs: Path) -> int:
    """Exit code of a failed group; the last lines of the failed process when it is not rank 0 (whose own
    output is on the console already)."""
    if 0 in failures and failures[0].exitcode > 0:
        return _exit_code(failures[0].exitcode)       # rank 0 said why (the others died in a collective it left)
    rank = min((r for r in failures if r != 0), key=lambda r: failures[r].timestamp, default=0)
    failure = failures[rank]
    tail = []
    for path in sorted(logs.glob(f"*/attempt_*/{failure.local_rank}/std*.log")):
        tail += path.read_text(errors="replace").strip().splitlines()
    log.error("\n".join([f"sfv-bench run: process {rank} of {k} ended with code {_exit_code(failure.exitcode)}:",
                         *tail[-15:]]))
    return _exit_code(failure.exitcode)


@contextlib.contextmanager
def _environ(values: dict):
    """``os.environ`` with ``values`` (what torchrun's children inherit), restored afterwards."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _quiet(name: str):
    """torchrun's own log lines (rendezvous, 'failed (exitcode ...)') stay off the console: we say it once."""
    logger = logging.getLogger(name)
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(old)


class Dist:
    def __init__(self, device: str = "cpu"):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank, self.local_rank = 0, 0
        self.device = device
        self.state = None
        if self.world > 1:
            from accelerate import PartialState

            self.state = PartialState(cpu=not device.startswith("cuda"), timeout=timeout())
            self.world, self.rank = self.state.num_processes, self.state.process_index
            self.local_rank = self.state.local_process_index
            if device.startswith("cuda") and ":" not in device:
                self.device = str(self.state.device)
        elif device.startswith("cuda") and ":" not in device and torch.cuda.is_available():
            self.device = "cuda:0"

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        """This process's contiguous block of ``items`` (accelerate's split; the first ranks take one more)."""
        if self.state is None:
            return list(items)
        with self.state.split_between_processes(list(items)) as mine:
            return list(mine)

    def deal(self, items: list) -> list:
        """This process's part of ``items`` dealt round robin (rank r: items r, r + K, ...): the parts differ by
        at most one item whatever ``items`` holds (``shard`` keeps contiguous blocks for ordered gathers)."""
        return list(items)[self.rank::self.world]

    def main_alone(self, work):
        """``work(tick)`` in rank 0 alone while the others wait; returns its result there (None elsewhere).
        ``work`` calls ``tick()`` after each bounded piece of work (one video, one pass timing): each tick is
        one broadcast, so no process waits longer than one piece (never the whole work) in one collective.
        An exception in rank 0 is raised there after the others are released."""
        if self.state is None:
            return work(lambda: None)
        if not self.main:
            while self._from_main(None):
                pass
            return None
        try:
            return work(lambda: self._from_main(True))
        finally:
            self._from_main(False)

    def _from_main(self, flag):
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([flag], from_process=0)[0]

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum a float64 tensor over processes (gloo wants CPU tensors; nccl wants CUDA ones)."""
        if self.state is None:
            return t
        from accelerate.utils import reduce

        dev = self.device if self.device.startswith("cuda") else "cpu"
        return reduce(t.to(dev).clone(), reduction="sum").cpu()

    def gather_objects(self, obj) -> list:
        """Every process gets the list of every process's object (rank order)."""
        if self.state is None:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def close(self) -> None:
        if self.state is not None:
            self.state.destroy_process_group()
