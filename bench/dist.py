"""Data-parallel helpers for `accelerate launch` / `torchrun` (env RANK / WORLD_SIZE / LOCAL_RANK).

One process: every function is a no-op. Several: torch.distributed with gloo on CPU, nccl on CUDA.
Samples are sharded by position in the sorted id list (rank r takes items r, r+W, r+2W, ...).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as tdist


class Dist:
    def __init__(self, device: str = "cpu"):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = device
        if device.startswith("cuda") and ":" not in device and torch.cuda.is_available():
            self.device = f"cuda:{self.local_rank}"
        if self.world > 1 and not tdist.is_initialized():
            backend = "nccl" if self.device.startswith("cuda") else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(self.device)
            tdist.init_process_group(backend=backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        return items[self.rank::self.world]

    def barrier(self) -> None:
        if self.world > 1:
            tdist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum a float64 tensor over processes (gloo wants CPU tensors; nccl wants CUDA ones)."""
        if self.world == 1:
            return t
        dev = self.device if self.device.startswith("cuda") else "cpu"
        x = t.to(dev).clone()
        tdist.all_reduce(x, op=tdist.ReduceOp.SUM)
        return x.cpu()

    def gather_objects(self, obj) -> list:
        """Every process gets the list of every process's object (rank order)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.world > 1 and tdist.is_initialized():
            tdist.destroy_process_group()
