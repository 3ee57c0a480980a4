"""Data-parallel helpers for `accelerate launch` / `torchrun` (env RANK / WORLD_SIZE / LOCAL_RANK), on top of
accelerate's ``PartialState``: ``split_between_processes`` shards the sample list (contiguous blocks, rank 0
first, so gathering in rank order restores the list order), ``gather_object`` / ``reduce`` combine results.

One process: accelerate is not initialised and every function is a no-op (gloo on CPU, nccl on CUDA otherwise).
``launch_local`` starts K such processes on this machine (what `sfv-bench run --procs K` does on a CPU).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import torch


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def launch_local(k: int, argv: list, threads: int) -> int:
    """Run ``python -m bench ARGV`` as ``k`` processes here (torchrun's variables: RANK, WORLD_SIZE, MASTER_*;
    gloo), each with ``threads`` torch threads, and wait. Rank 0 writes to our stdout; the others' stdout is
    dropped (they print nothing but errors). The first process that fails stops the others; its code is ours."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(k),
                LOCAL_WORLD_SIZE=str(k), OMP_NUM_THREADS=str(threads))
    procs = [subprocess.Popen([sys.executable, "-m", "bench", *argv], stdout=None if i == 0 else subprocess.DEVNULL,
                              env=dict(base, RANK=str(i), LOCAL_RANK=str(i))) for i in range(k)]
    codes, failed = [None] * k, []
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed or all(c == 0 for c in codes):
                break
            time.sleep(0.1)
    except KeyboardInterrupt:            # the terminal sent SIGINT to the children too: let them say so
        failed = [130]
    for p in procs:                      # a failed rank leaves the others waiting in a collective
        try:
            p.wait(timeout=10 if failed else None)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if not failed:
        return 0
    return codes[0] if codes[0] not in (None, 0) else failed[0]


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
