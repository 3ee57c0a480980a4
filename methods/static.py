"""``static``: the conditioning frame repeated -- a model that learned no motion (a reference row).

Every frame is the conditioning image brought to the generation size by the protocol's rule (the
frame the other methods condition on, without the VAE). No UNet call: its latency is 0.
"""
from __future__ import annotations

import numpy as np

from sfv_core.protocol import GenerationConditions

from .base import Method


class StaticMethod(Method):
    def load(self, stack=None, device="cpu", dtype=None, variant=None) -> "StaticMethod":
        return self

    def unet_calls_per_video(self) -> dict:
        return {"calls": 0, "batch": 0}

    def generate(self, images, seeds, conditions: GenerationConditions | None = None, **overrides) -> np.ndarray:
        from sfv_core.data.transforms import fit_images

        c = GenerationConditions.of(conditions, **overrides)
        fitted = fit_images(images, c.width, c.height, c.resize)[1]
        if len(seeds) != len(fitted):
            raise ValueError(f"{len(fitted)} images but {len(seeds)} seeds")
        self.unet_call_log, self._unet_times = [], [0.0] * len(fitted)
        return np.repeat(fitted[:, None], c.num_frames, axis=1)
