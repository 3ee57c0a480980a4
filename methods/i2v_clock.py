"""Clocks around a diffusers pipeline's parts: the denoiser (transformer / UNet forwards: time, and the batch
of every call), the text and image encoders, the VAE's encode and decode.

Each part's method is wrapped on the module instance (``module.forward`` or ``vae.decode``), so the
pipeline's own ``__call__`` runs unchanged; ``remove()`` puts the originals back. Clocks as in
``methods.models.timing``: CUDA events around each call on a GPU (read after synchronising),
``time.perf_counter`` on a CPU.
"""
from __future__ import annotations

import time

import torch

from .models.timing import cuda_device, sync

DENOISERS = ("transformer", "transformer_2", "unet")
# part name -> (pipeline attribute, method of it)
PARTS = {"text_encoder": ("text_encoder", "forward"), "image_encoder": ("image_encoder", "forward"),
         "vae_encode": ("vae", "encode"), "vae_decode": ("vae", "decode")}


def _first_tensor(args, kwargs):
    for v in (kwargs.get("hidden_states"), kwargs.get("sample"), *args, *kwargs.values()):
        if isinstance(v, torch.Tensor):
            return v
    return None


class CallClock:
    """Wraps ``getattr(owner, method)``: seconds inside it since ``reset()``, the batch of every call, the
    arguments of the last call (``replay()`` makes that call again)."""

    def __init__(self, owner, method: str, device):
        self.owner, self.method, self.device = owner, method, torch.device(device)
        self.inner = getattr(owner, method)
        self.reset()
        setattr(owner, method, self)

    def reset(self) -> None:
        self.batches, self._events, self._seconds, self.last_call = [], [], 0.0, None

    def __call__(self, *args, **kwargs):
        x = _first_tensor(args, kwargs)
        self.batches.append(int(x.shape[0]) if x is not None and x.dim() else 1)
        self.last_call = (args, kwargs)
        if self.device.type == "cuda":
            with cuda_device(self.device):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = self.inner(*args, **kwargs)
                end.record()
            self._events.append((start, end))
            return out
        t0 = time.perf_counter()
        out = self.inner(*args, **kwargs)
        self._seconds += time.perf_counter() - t0
        return out

    def seconds(self) -> float:
        if self._events:
            sync(self.device)
            self._seconds += sum(s.elapsed_time(e) for s, e in self._events) / 1000.0
            self._events = []
        return self._seconds

    @torch.no_grad()
    def replay(self):
        args, kwargs = self.last_call
        return self.inner(*args, **kwargs)

    def remove(self) -> None:
        if getattr(self.owner, self.method, None) is self:
            delattr(self.owner, self.method)          # the class's own method again
            if getattr(self.owner, self.method) != self.inner:
                setattr(self.owner, self.method, self.inner)


class PipelineClocks:
    """The clocks of one pipeline: ``denoiser`` (every denoiser module's calls, in call order) and ``parts``."""

    def __init__(self, pipe, device):
        self.denoisers = [CallClock(m, "forward", device) for n in DENOISERS
                          if isinstance(m := getattr(pipe, n, None), torch.nn.Module)]
        self.parts = {name: CallClock(m, method, device) for name, (attr, method) in PARTS.items()
                      if isinstance(m := getattr(pipe, attr, None), torch.nn.Module)}

    def reset(self) -> None:
        for c in (*self.denoisers, *self.parts.values()):
            c.reset()

    def denoiser_batches(self) -> list:
        return [b for c in self.denoisers for b in c.batches]

    def denoiser_seconds(self) -> float:
        return sum(c.seconds() for c in self.denoisers)

    def part_seconds(self) -> dict:
        return {name: c.seconds() for name, c in self.parts.items() if c.batches}

    def last_denoiser(self):
        """The clock of the denoiser that made the last call (a two-expert pipeline has two), or None."""
        used = [c for c in self.denoisers if c.last_call is not None]
        return used[-1] if used else None

    def remove(self) -> None:
        for c in (*self.denoisers, *self.parts.values()):
            c.remove()
