"""Data-parallel helpers for `accelerate launch` / `torchrun` (env RANK / WORLD_SIZE / LOCAL_RANK), on top of
accelerate's ``PartialState``: ``split_between_processes`` shards the sample list (contiguous blocks, rank 0
first, so gathering in rank order restores the list order), ``gather_object`` / ``reduce`` combine results.

One process: accelerate is not initialised and every function is a no-op (gloo on CPU, nccl on CUDA otherwise).
``launch_local`` starts K such processes on this machine (what `sfv-bench run --procs K` does on a CPU).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _exit_code(code: int) -> int:
    return 128 - code if code < 0 else code          # killed by signal N: 128 + N, as a shell says


def launch_local(k: int, cmd: list, threads: int, grace: float = 10.0) -> int:
    """Run ``cmd`` (``python -m bench ARGV``) as ``k`` processes here (torchrun's variables: RANK, WORLD_SIZE, MASTER_*;
    gloo), each with ``threads`` torch threads (``OMP_NUM_THREADS`` if set), and wait. Rank 0 writes to our
    stdout and stderr; the others' output is dropped unless one of them fails first (then its last lines
    are shown). The first failure stops the others (``grace`` seconds, then SIGTERM); a SIGTERM here reaches every
    process, and on Linux a child dies with the launcher (PR_SET_PDEATHSIG). Returns the exit code of the
    process that failed first (0 when none did)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = str(Path(__file__).resolve().parents[1])   # the children import this very checkout
    base = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(k),
                LOCAL_WORLD_SIZE=str(k), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(threads)),
                PYTHONSAFEPATH="1", PYTHONPATH=os.pathsep.join(x for x in (root, os.environ.get("PYTHONPATH")) if x))
    logs = [None] + [tempfile.TemporaryFile() for _ in range(1, k)]
    prctl = _prctl()
    procs = [subprocess.Popen(cmd, env=dict(base, RANK=str(i), LOCAL_RANK=str(i)),
                              stdout=logs[i], stderr=logs[i],
                              preexec_fn=(lambda: prctl(1, signal.SIGTERM)) if prctl else None)
             for i in range(k)]

    def stop(*_):
        for p in procs:
            if p.poll() is None:
                p.terminate()
        raise SystemExit(143)
    old = signal.signal(signal.SIGTERM, stop)
    first, interrupted = None, False
    try:
        while first is None and any(p.poll() is None for p in procs):
            first = next((i for i, p in enumerate(procs) if p.poll() not in (None, 0)), None)
            time.sleep(0.1)
    except KeyboardInterrupt:            # the terminal sent SIGINT to the children too: they say so
        interrupted = True
    finally:
        deadline = time.time() + grace
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()) if first is not None or interrupted else None)
            except subprocess.TimeoutExpired:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        signal.signal(signal.SIGTERM, old)
    first = next((i for i, p in enumerate(procs) if p.returncode != 0), None) if first is None else first
    if first and procs[0].returncode == 2:
        first = 0                        # rank 0 refused the input (the others died in a collective it left)
    if interrupted:
        return 130
    if first is None:
        return 0
    if first > 0:                        # rank 0 did not say it: show why the other one stopped
        logs[first].seek(0)
        tail = logs[first].read().decode(errors="replace").strip().splitlines()[-15:]
        print(f"sfv-bench run: process {first} of {k} ended with code {_exit_code(procs[first].returncode)}:",
              *tail, sep="\n", file=sys.stderr)
    return _exit_code(procs[first].returncode)


def _prctl():
    """libc's prctl, looked up here (the child only calls it between fork and exec), or None off Linux."""
    import ctypes

    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None


class Dist:
    def __init__(self, device: str = "cpu"):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank, self.local_rank = 0, 0
        self.device = device
        self.state = None
        if self.world > 1:
            from accelerate import PartialState

            self.state = PartialState(cpu=not device.startswith("cuda"))
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
