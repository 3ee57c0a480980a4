"""Every CUDA timing call goes to the device asked for (``cuda:1``), not to the current one (cuda:0).

No GPU here: torch.cuda's device context, events, synchronize, streams, graphs and memory statistics are
replaced by fakes that log the device each call acts on (the current one unless the call names it)."""
from __future__ import annotations

import contextlib
import types

import pytest
import torch

from bench.latency.options import Options, UNetRunner
from methods.models import timing


class FakeCuda:
    """The calls' log: (what, device index); ``current`` is what torch.cuda.current_device() would say."""

    def __init__(self):
        self.current, self.log = 0, []

    def at(self, device=None):
        return self.current if device is None or torch.device(device).index is None else torch.device(device).index

    def install(self, monkeypatch):
        fake = self

        @contextlib.contextmanager
        def device(d):
            old, fake.current = fake.current, fake.at(d)
            try:
                yield
            finally:
                fake.current = old

        class Event:
            def __init__(self, enable_timing=False):
                pass

            def record(self, stream=None):
                fake.log.append(("event.record", fake.current))

            def synchronize(self):
                pass

            def elapsed_time(self, end):
                return 1.0

        class Stream:
            def __init__(self, device=None):
                fake.log.append(("Stream", fake.at(device)))

            def wait_stream(self, other):
                pass

        class CUDAGraph:
            def __init__(self):
                fake.log.append(("CUDAGraph", fake.current))

            def replay(self):
                fake.log.append(("graph.replay", fake.current))

        @contextlib.contextmanager
        def graph(g):
            fake.log.append(("graph capture", fake.current))
            yield

        def logged(name):
            return lambda device=None: fake.log.append((name, fake.at(device)))

        for name, value in {"device": device, "Event": Event, "Stream": Stream, "CUDAGraph": CUDAGraph,
                            "graph": graph, "stream": lambda s: contextlib.nullcontext(),
                            "current_stream": lambda device=None: Stream(device),
                            "synchronize": logged("synchronize"), "empty_cache": logged("empty_cache"),
                            "reset_peak_memory_stats": logged("reset_peak_memory_stats"),
                            "max_memory_allocated": lambda device=None: logged("max_memory_allocated")(device) or 0,
                            }.items():
            monkeypatch.setattr(torch.cuda, name, value)
        return self


@pytest.fixture
def cuda(monkeypatch):
    return FakeCuda().install(monkeypatch)


def _devices(cuda):
    assert cuda.log, "no CUDA call was made"
    return {index for _, index in cuda.log}


def test_unet_timer_records_and_reads_its_events_on_the_samples_gpu(cuda):
    sample = types.SimpleNamespace(shape=(1,), is_cuda=True, device=torch.device("cuda", 1))
    timer = timing.UNetTimer(lambda x: x)
    timer(sample)
    timer(sample)
    assert timer.total_seconds() == pytest.approx(0.002)
    assert _devices(cuda) == {1} and [w for w, _ in cuda.log].count("event.record") == 4
    assert ("synchronize", 1) in cuda.log


def test_repeat_timing_sync_and_peak_memory_go_to_the_requested_gpu(cuda):
    peak = {}
    with timing.peak_memory("cuda:1", peak, "k"):
        assert timing.time_ms(lambda: None, "cuda:1", warmup=2, repeats=3) == [1.0] * 3
    timing.sync("cuda:1")
    kinds = {w for w, _ in cuda.log}
    assert {"event.record", "synchronize", "reset_peak_memory_stats", "max_memory_allocated"} <= kinds
    assert _devices(cuda) == {1} and cuda.current == 0          # the context is left as it was


def test_cuda_graph_capture_and_replay_happen_on_the_runners_gpu(cuda):
    model = torch.nn.Linear(2, 2)
    model.config = {}                                             # what UNetRunner reads of a UNet
    runner = UNetRunner(model, Options(cuda_graphs=True), "cuda:1")
    x = torch.ones(1, 2)
    runner(x)
    runner(x)
    kinds = [w for w, _ in cuda.log]
    assert kinds.count("graph capture") == 1 and kinds.count("graph.replay") == 2 and "Stream" in kinds
    assert _devices(cuda) == {1}
