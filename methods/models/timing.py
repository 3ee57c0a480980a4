"""UNet timing: the call-counting timer wrapped around a UNet, repeat timing of any callable, and
the one summary of a list of times (median, p10, p90, min, mean, n).

Clocks: on CUDA a pair of ``torch.cuda.Event(enable_timing=True)`` around each call (read after
synchronising), recorded, synchronised and read inside ``torch.cuda.device(<the call's device>)``: an event
records on the current stream of the *current* device, so without the context ``cuda:1`` would be timed on
``cuda:0``'s idle stream (near-zero times, no error); on a CPU ``torch.utils.benchmark.Timer`` for repeat timing (its ``timeit``: the thread count
pinned, two warm-up calls before each measured one) and ``time.perf_counter`` inside the UNet wrapper
(CPU forward passes are synchronous).
"""
from __future__ import annotations

import contextlib
import time

import numpy as np
import torch


def is_cuda(device) -> bool:
    return str(device).startswith("cuda")


def cuda_device(device):
    """``torch.cuda.device(device)`` for a CUDA device (events, streams, graphs, synchronize and the caching
    allocator then act on that GPU, not on the current one); a no-op context for any other device."""
    return torch.cuda.device(torch.device(device)) if is_cuda(device) else contextlib.nullcontext()


def sync(device) -> None:
    if is_cuda(device):
        torch.cuda.synchronize(torch.device(device))


def clock_name(device) -> str:
    return "cuda-events" if is_cuda(device) else "time.perf_counter"


class UNetTimer:
    """Wraps a UNet: records the batch size of every call and the time spent inside it.

    ``calls`` lists the batch of every call since the last ``reset()``; ``total_seconds()`` the
    time; ``last_call`` the arguments of the last call (to make that pass again). Attribute reads (config,
    dtype, ...) go to the wrapped model.
    """

    def __init__(self, unet):
        self.unet = unet
        self.calls: list[int] = []
        self._events: list = []
        self._seconds = 0.0
        self.last_call = None

    def __getattr__(self, name):
        return getattr(self.unet, name)

    def reset(self) -> None:
        self.calls, self._events, self._seconds, self.last_call = [], [], 0.0, None

    def __call__(self, sample, *args, **kwargs):
        self.calls.append(int(sample.shape[0]))
        self.last_call = (sample, args, kwargs)
        if sample.is_cuda:
            with cuda_device(sample.device):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = self.unet(sample, *args, **kwargs)
                end.record()
            self._events.append((sample.device, start, end))
        else:
            t0 = time.perf_counter()
            out = self.unet(sample, *args, **kwargs)
            self._seconds += time.perf_counter() - t0
        return out

    def total_seconds(self) -> float:
        """Seconds spent in the UNet since the last reset."""
        if self._events:
            for device in {d for d, _, _ in self._events}:
                sync(device)
            self._seconds += sum(s.elapsed_time(e) for _, s, e in self._events) / 1000.0
            self._events = []
        return self._seconds


def time_ms(fn, device, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls (on CPU each measured call
    follows Timer.timeit's own two warm-up calls, so at most ``warmup - 2`` more are made first)."""
    with cuda_device(device):
        return _time_ms(fn, device, warmup, repeats)


def _time_ms(fn, device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup if is_cuda(device) else max(warmup - 2, 0)):
        fn()
    sync(device)
    out = []
    timer = None if is_cuda(device) else cpu_timer(fn)
    for _ in range(repeats):
        if is_cuda(device):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(float(start.elapsed_time(end)))
        else:
            out.append(timer.timeit(number=1).raw_times[0] * 1e3)
    return out


def cpu_timer(fn):
    """``torch.utils.benchmark.Timer`` of ``fn()`` at the current torch thread count (the caller sets it:
    1 by default on CPU, as torch.utils.benchmark does)."""
    from torch.utils.benchmark import Timer

    return Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())


def summarize(values, unit: str = "ms") -> dict:
    """{median_<unit>, p10_<unit>, p90_<unit>, min_<unit>, mean_<unit>, n} of a list of times."""
    a = np.asarray(values, dtype=np.float64)
    return {f"median_{unit}": float(np.median(a)), f"p10_{unit}": float(np.percentile(a, 10)),
            f"p90_{unit}": float(np.percentile(a, 90)), f"min_{unit}": float(a.min()),
            f"mean_{unit}": float(a.mean()), "n": int(a.size)}


@contextlib.contextmanager
def peak_memory(device, out: dict, key: str):
    """Record the peak memory during the block in ``out[key]`` (CUDA: allocated bytes; CPU: None)."""
    if is_cuda(device):
        sync(device)
        torch.cuda.reset_peak_memory_stats(torch.device(device))
    yield
    if is_cuda(device):
        sync(device)
        out[key] = int(torch.cuda.max_memory_allocated(torch.device(device)))
    else:
        out[key] = None


def peak_rss_bytes() -> int | None:
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB
    except Exception:  # pragma: no cover - non-Linux
        return None
