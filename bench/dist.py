"""Data-parallel helpers for `accelerate launch` / `torchrun` (env RANK / WORLD_SIZE / LOCAL_RANK), on top of
accelerate's ``PartialState``: ``split_between_processes`` shards the sample list (contiguous blocks, rank 0
first, so gathering in rank order restores the list order), ``gather_object`` / ``reduce`` combine results.

One process: accelerate is not initialised and every function is a no-op (gloo on CPU, nccl on CUDA otherwise).
"""
from __future__ import annotations

import os

import torch


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
