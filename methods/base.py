"""The interface every method implements, the UNet timing wrapper and the non-finite check.

Importing this module does not import torch (the registry and the dummy method stay cheap).
"""
from __future__ import annotations

import time

import numpy as np

GENERATE_DEFAULTS = dict(num_frames=14, fps=7, motion_bucket_id=127, noise_aug_strength=0.02,
                         decode_chunk_size=14)


class NonFiniteOutput(RuntimeError):
    """A generated video holds NaN or inf: that method failed (the harness goes on with the others)."""


def resolve_dtype(dtype):
    """torch dtype from a dtype or a name ('fp32'/'float32', 'fp16'/'float16'/'half', 'bf16'/'bfloat16')."""
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
             "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    try:
        return names[str(dtype).lower().replace("torch.", "")]
    except KeyError:
        from bench.fsutil import UserError
        raise UserError(f"unknown dtype {dtype!r}; valid: fp32, fp16, bf16") from None


class UNetTimer:
    """Wraps a UNet: records the batch size of every call and the time spent inside it.

    On CUDA each call is bracketed by a pair of ``torch.cuda.Event(enable_timing=True)`` (read
    after one synchronize in ``total_seconds``); on the CPU by ``time.perf_counter`` (CPU forward
    passes are synchronous). ``reset()`` starts a new measurement.
    """

    def __init__(self, unet):
        self.unet = unet
        self.calls: list[int] = []
        self._events: list = []
        self._seconds = 0.0

    def __getattr__(self, name):  # config, dtype, ... of the wrapped model
        return getattr(self.unet, name)

    def reset(self) -> None:
        self.calls, self._events, self._seconds = [], [], 0.0

    def __call__(self, sample, *args, **kwargs):
        import torch

        self.calls.append(int(sample.shape[0]))
        if sample.is_cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = self.unet(sample, *args, **kwargs)
            end.record()
            self._events.append((start, end))
        else:
            t0 = time.perf_counter()
            out = self.unet(sample, *args, **kwargs)
            self._seconds += time.perf_counter() - t0
        return out

    def total_seconds(self) -> float:
        """Seconds spent in the UNet since the last reset."""
        if self._events:
            import torch

            torch.cuda.synchronize()
            self._seconds += sum(s.elapsed_time(e) for s, e in self._events) / 1000.0
            self._events = []
        return self._seconds


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

    Attributes: ``name`` (registry name), ``steps``, ``cfg`` (batch-2 classifier-free guidance),
    ``default_stack``, ``options`` (dict), ``unet_call_log`` (batch size of every UNet call of the
    last ``generate``).

    Life cycle: ``m = get_method(spec, **options); m.load(stack, device, dtype); m.warmup(h, w)``
    (optional, not timed), then ``m.generate(images, seeds, ...)`` any number of times, reading
    ``m.last_unet_times()`` after each call.
    """

    name = "method"
    cfg = False
    default_stack = "svd"

    def __init__(self, name: str, steps: int, **options):
        self.name = name
        self.steps = int(steps)
        self.options = dict(options)
        self.unet_call_log: list[int] = []
        self._unet_times: list[float] = []

    # -- to implement -------------------------------------------------------------------------
    def load(self, stack=None, device="cpu", dtype=None, unet=None) -> "Method":
        """Load the models (stack: spec or folder, default ``default_stack``; unet: overrides the
        method's UNet source). Returns self."""
        raise NotImplementedError

    def generate(self, images: np.ndarray, seeds, *, num_frames: int = 14, fps: int = 7,
                 motion_bucket_id: int = 127, noise_aug_strength: float = 0.02,
                 decode_chunk_size: int = 14) -> np.ndarray:
        """Videos uint8 (B, T, H, W, 3) from conditioning images uint8 (B, H, W, 3) at generation size.

        Sample i uses ``torch.Generator(device).manual_seed(seeds[i])`` only, so a video does not
        depend on what else is in the batch (up to batch-size-dependent kernel rounding). Raises
        NonFiniteOutput when a video holds NaN/inf.
        """
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    def unet_calls_per_video(self) -> dict:
        """{'calls': UNet calls per video, 'batch': UNet batch per video (2 with CFG)}."""
        return {"calls": self.steps, "batch": 2 if self.cfg else 1}

    def last_unet_times(self) -> list[float]:
        """UNet seconds per video of the last ``generate`` call.

        With B videos in one call, the UNet time of the whole call is divided equally among them
        (they share every UNet call); warm-up calls are never included.
        """
        return list(self._unet_times)

    def check(self, stack=None) -> None:
        """Resolve every file ``load`` will need without loading it; UserError naming what is missing.

        The harness calls it for every method before generating anything."""

    def unload(self) -> None:
        """Release the models (the harness calls it between methods)."""

    def warmup(self, height: int, width: int, **generate_kwargs) -> None:
        """One untimed generation on a grey image (kernel selection, allocator, lazy init)."""
        img = np.full((1, height, width, 3), 127, np.uint8)
        self.generate(img, [0], **generate_kwargs)
        self.unet_call_log, self._unet_times = [], []

    def describe(self) -> dict:
        """What a results file should record about this method."""
        return {"name": self.name, "steps": self.steps, "cfg": self.cfg,
                "unet_calls_per_video": self.unet_calls_per_video(),
                "options": {k: str(v) if not isinstance(v, (int, float, bool, type(None))) else v
                            for k, v in self.options.items()}}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}:{self.steps}>"
