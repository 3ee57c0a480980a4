"""Which source frames make a clip: the rule shared by the benchmark's real clips and training clips.

index_k = start + round(k * src_fps / fps), k = 0..num_frames-1, ``round`` being round-half-up
(floor(x + 0.5); Python's half-to-even round differs only on exact .5 ties, e.g. 25 fps -> 10 fps).
``clip_start="first"``: start = 0 (the frame the generator is conditioned on). ``"random"``: start
uniform in 0..(n_src - 1 - last offset), from ``numpy.random.default_rng(seed)`` (StyleGAN-V's rule).
A video with fewer than last index + 1 frames gives None (too short).
"""
from __future__ import annotations

import math

import numpy as np


def clip_indices(n_src: int, src_fps: float, num_frames: int, fps: int, clip_start: str = "first",
                 seed: int = 0) -> list[int] | None:
    """Source frame indices of the clip, or None when the video is too short for it."""
    step = src_fps / fps
    offsets = [math.floor(k * step + 0.5) for k in range(num_frames)]
    slack = n_src - 1 - offsets[-1]
    if slack < 0:
        return None
    start = 0
    if clip_start == "random":
        start = int(np.random.default_rng(seed).integers(0, slack + 1))
    return [start + o for o in offsets]


def frames_needed(src_fps: float, num_frames: int, fps: int) -> int:
    """Frames a video at ``src_fps`` needs for a clip starting at frame 0."""
    return clip_indices(10 ** 9, src_fps, num_frames, fps)[-1] + 1
