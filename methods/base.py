"""The interface every method implements, and the non-finite check.

Importing this module does not import torch (the registry and the dummy method stay cheap).
"""
from __future__ import annotations

import numpy as np

from sfv_core.protocol import GenerationConditions

from .registry import METHODS, MethodInfo


class NonFiniteOutput(RuntimeError):
    """A generated video holds NaN or inf: that method failed (the harness goes on with the others)."""


def check_finite(name: str, array, seeds, where: str) -> None:
    """Raise NonFiniteOutput naming the videos (by index and seed) of ``array`` (B, ...) with NaN/inf."""
    if hasattr(array, "detach"):
        import torch

        bad = (~torch.isfinite(array.detach()).flatten(1).all(1)).nonzero().flatten().tolist()
    else:
        bad = np.flatnonzero(~np.isfinite(np.asarray(array)).reshape(len(array), -1).all(1)).tolist()
    if bad:
        which = ", ".join(f"#{i} (seed {seeds[i]})" for i in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise NonFiniteOutput(f"method {name}: NaN/inf in the {where} of {len(bad)} of {len(array)} "
                              f"video(s): {which}")


class Method:
    """One generation method.

    Built by ``methods.registry.get_method(spec, **options)``: ``name``, ``steps``, ``options``
    (every option of the method, the registry's defaults filled in), ``user_options`` (the names
    the user set). The method's facts are its registry entry, ``info`` (``methods.registry.MethodInfo``):
    ``cfg`` (batch-2 classifier-free guidance with these options) and ``default_stack`` read it.

    Life cycle: ``m.check(stack)`` (resolve files, load nothing), ``m.load(stack, device, dtype)``,
    ``m.warmup(h, w)`` (optional, not timed), then ``m.generate(images, seeds, conditions)`` any
    number of times, reading ``m.last_unet_times()`` and ``m.unet_call_log`` after each call.
    """

    def __init__(self, name: str, steps: int, options: dict | None = None, user_options=()):
        self.info: MethodInfo = METHODS[name]
        self.name = name
        self.steps = int(steps)
        self.options = dict(options or {})
        self.user_options = set(user_options)
        self.unet_call_log: list[int] = []
        self._unet_times: list[float] = []

    @property
    def cfg(self) -> bool:
        return self.info.uses_cfg(self.options)

    @property
    def default_stack(self) -> str:
        return self.info.default_stack

    # -- to implement -------------------------------------------------------------------------
    def load(self, stack=None, device="cpu", dtype=None, variant=None) -> "Method":
        """Load the models (stack: spec or folder, default ``default_stack``; ``variant``: its weight files,
        e.g. ``fp16``, None: the ones there, see ``methods.models.variants``). Returns self."""
        raise NotImplementedError

    def generate(self, images: np.ndarray, seeds, conditions: GenerationConditions | None = None,
                 **overrides) -> np.ndarray:
        """Videos uint8 (B, T, H, W, 3) from conditioning images uint8 (B, H, W, 3) at generation size.

        Sample i uses ``torch.Generator(device).manual_seed(seeds[i])`` only, so a video does not
        depend on what else is in the batch (up to batch-size-dependent kernel rounding). Raises
        NonFiniteOutput when a video holds NaN/inf. ``overrides`` replace single conditions
        (``generate(images, seeds, num_frames=3)``).
        """
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    def frames_to_generate(self, num_frames: int) -> int:
        """Frames the method generates to return ``num_frames`` (AnimateLCM*: 25, the first 14 kept)."""
        return num_frames

    def unet_calls_per_video(self) -> dict:
        """{'calls': UNet calls per video, 'batch': UNet batch per video (2 with CFG)}."""
        return {"calls": self.steps, "batch": 2 if self.cfg else 1}

    def last_unet_times(self) -> list[float]:
        """UNet seconds per video of the last ``generate`` call.

        With B videos in one call, the UNet time of the whole call is divided equally among them
        (they share every UNet call); warm-up calls are never included.
        """
        return list(self._unet_times)

    def timed_part(self, images, seeds, conditions: GenerationConditions | None = None):
        """What the timing pass runs per video (then reads ``last_unet_times``): ``generate`` here; the SVD
        family stops at the latents (the UNet's last call), so the untimed VAE decode is not run."""
        return self.generate(images, seeds, conditions)

    def unet_pass(self):
        """``(key, what, replay)`` of the last UNet call of the last ``generate`` / ``timed_part``: a key that
        is equal for passes of one architecture at one input shape, dtype and device, a dict saying what the
        pass is, and ``replay()`` making that call again; None for a method without a UNet."""
        return None

    def check(self, stack=None, variant=None) -> None:
        """Resolve every file ``load(stack, variant=variant)`` will read without loading it; UserError naming
        what is missing.

        The harness calls it for every method before generating anything."""

    def unload(self) -> None:
        """Release the models (the harness calls it between methods)."""

    def warmup(self, height: int, width: int, conditions: GenerationConditions | None = None,
               **overrides) -> None:
        """One untimed generation on a grey image (kernel selection, allocator, lazy init)."""
        img = np.full((1, height, width, 3), 127, np.uint8)
        self.generate(img, [0], conditions, **overrides)
        self.unet_call_log, self._unet_times = [], []

    def describe(self) -> dict:
        """What a results file should record about this method."""
        return {"name": self.name, "steps": self.steps, "cfg": self.cfg,
                "unet_calls_per_video": self.unet_calls_per_video(),
                "options": {k: str(v) if not isinstance(v, (int, float, bool, type(None))) else v
                            for k, v in self.options.items()}}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}:{self.steps}>"
