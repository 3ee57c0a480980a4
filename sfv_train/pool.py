"""The mini world's training clips: drawn from the synthetic generator in memory, never from the
evaluation data.

The evaluation dataset is ``make_synthetic(seed, classes, groups, clips=5)``: videos
``(slot, group, c01..c05)``, fold 1 testing groups ``fold_test_groups(groups, 1)``. The pool takes
only the other (training) groups and clip numbers from ``first_clip`` on (1000), so no video of the
dataset -- test or train list -- and no evaluation seed is ever in it (a test checks this). Clip i
is class ``i % classes``, group the i-th training group in turn, clip ``first_clip + i``; rendered as
the evaluation takes real clips (``sfv_core.data.synthetic.render_clip``). The pool is written once
(``clips.npy`` + ``pool.json``) and reused; a pool made with another spec is refused.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sfv_core.data.synthetic import fold_test_groups, render_clip
from sfv_core.errors import UserError
from sfv_core.fsutil import atomic_path, atomic_write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolSpec:
    seed: int = 0            # the synthetic dataset's seed: backgrounds by (seed, slot, group)
    classes: int = 10
    groups: int = 10         # groups of the evaluation dataset; fold 1's test groups are left out
    size: int = 4000         # clips in the pool
    first_clip: int = 1000   # clip numbers start here (the dataset has c01..c05)
    num_frames: int = 14
    fps: int = 7
    width: int = 32
    height: int = 32

    def train_groups(self) -> list[int]:
        test = set(fold_test_groups(self.groups, 1))
        return [g for g in range(1, self.groups + 1) if g not in test]

    def keys(self) -> list[tuple[int, int, int]]:
        """(slot, group, clip) of every pool clip, in order."""
        groups = self.train_groups()
        return [(i % self.classes, groups[(i // self.classes) % len(groups)], self.first_clip + i)
                for i in range(self.size)]


def build_pool(spec: PoolSpec, folder, threads: int | None = None) -> np.ndarray:
    """uint8 (size, T, H, W, 3) of the pool, rendered once into ``folder`` and read back afterwards."""
    folder = Path(folder)
    meta, data = folder / "pool.json", folder / "clips.npy"
    if meta.is_file() and data.is_file():
        old = json.loads(meta.read_text())
        if old != dataclasses.asdict(spec):
            raise UserError(f"{folder} holds a clip pool made with other settings ({old}); use another folder")
        return np.load(data, mmap_mode="r")
    keys = spec.keys()
    log.info(f"rendering {len(keys)} training clips ({spec.num_frames} frames at {spec.fps} fps, "
             f"{spec.width}x{spec.height}) from training groups {spec.train_groups()}")

    def render(key):
        slot, group, clip = key
        return render_clip(spec.seed, slot=slot, group=group, clip=clip, num_frames=spec.num_frames, fps=spec.fps,
                           width=spec.width, height=spec.height)

    with ThreadPoolExecutor(max_workers=threads or max(1, min(4, os.cpu_count() or 1))) as pool:
        clips = np.stack(list(pool.map(render, keys)))
    with atomic_path(data, suffix=".npy") as tmp:
        np.save(tmp, clips)
    atomic_write_json(meta, dataclasses.asdict(spec))
    return clips
