"""``dummy``: a cheap deterministic stand-in for harness tests (no models).

Video i: frame t is the conditioning image shifted by round(t * (dy_i, dx_i)) pixels (wrapping)
and brightened by t * b_i, with (dy_i, dx_i, b_i) drawn from numpy's default_rng(seeds[i]). The
reported UNet calls per video are ``steps`` calls of batch ``batch``; the "UNet time" is the time
spent making the frames. Option ``nan=True`` makes every video NaN, so ``generate`` raises
NonFiniteOutput exactly like a real method that diverged.
"""
from __future__ import annotations

import time

import numpy as np

from sfv_core.protocol import GenerationConditions

from .base import Method, check_finite


class DummyMethod(Method):
    def load(self, stack=None, device="cpu", dtype=None, variant=None) -> "DummyMethod":
        self.device, self.dtype = str(device), str(dtype)
        return self

    def unet_calls_per_video(self) -> dict:
        return {"calls": self.steps, "batch": int(self.options["batch"])}

    def generate(self, images, seeds, conditions: GenerationConditions | None = None,
                 **overrides) -> np.ndarray:
        from sfv_core.data.transforms import fit_images

        c = GenerationConditions.of(conditions, **overrides)
        num_frames = c.num_frames
        images = fit_images(images, c.width, c.height, c.resize)[1]
        if len(seeds) != len(images):
            raise ValueError(f"{len(images)} images but {len(seeds)} seeds")
        t0 = time.perf_counter()
        videos = np.empty((len(images), num_frames) + images.shape[1:], np.float32)
        for i, (img, seed) in enumerate(zip(images, seeds)):
            rng = np.random.default_rng(int(seed))
            dy, dx = rng.uniform(-2, 2, size=2)
            bright = rng.uniform(-3, 3)
            for t in range(num_frames):
                shifted = np.roll(img, (int(round(t * dy)), int(round(t * dx))), axis=(0, 1))
                videos[i, t] = shifted.astype(np.float32) + t * bright
        if self.options["nan"]:
            videos[:] = np.nan
        elapsed = time.perf_counter() - t0
        batch = int(self.options["batch"])
        self.unet_call_log = [batch * len(images)] * self.steps
        self._unet_times = [elapsed / len(images)] * len(images)
        check_finite(self.name, videos, seeds, "decoded frames")
        return np.clip(np.round(videos), 0, 255).astype(np.uint8)
