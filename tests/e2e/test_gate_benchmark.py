"""CI regression gate on the tiny stack (CPU). It gates only on what noise cannot move.

1. **Exact UNet calls per video for every registered method**, counted by hooks on the UNet
   module itself (independent of the adapters' own ``unet_call_log``): ``svd:N`` makes N calls of
   batch 2 (cond + uncond in one call), ``animatelcm:N`` N calls of batch 1, the one-step family
   (``onestep``, ``sfv``, ``ufogen``, ``ladd``) one call of batch 1. A method registered without an
   entry here fails the gate. Each generation is timed with pytest-benchmark's ``benchmark``
   fixture (figures printed with ``--benchmark-enable``; with the project's default
   ``--benchmark-disable`` the function still runs once and every assertion still applies).
2. **svd:25 against sfv:1 within a band**: the UNet time of one svd:25 video over that of one
   sfv:1 video must reflect 25 batch-2 calls against 1 batch-1 call. Expected ratio =
   25 x r, where r = (batch-2 call) / (batch-1 call) cost measured in the same run by direct,
   interleaved UNet calls on the samplers' input shapes. Measured ratio = 25 x (median UNet call
   inside the svd:25 loop) / (median UNet call of 5 sfv:1 videos) -- per-call medians, so a burst
   of load on a shared 2-core runner does not move it; the call counts behind the factor 25 are
   the exact assertions of part 1. Band: measured / expected in [0.5, 2], up to 3 attempts.
   It catches per-call cost changes of 2x or more inside one method's loop (a larger latent,
   frames or batch, another dtype, an un-batched CFG) -- not small ones: speed belongs to the GPU
   runs compared by ``sfv-bench regress``. No absolute milliseconds are asserted.

Budget: about 20 s on 2 CPU cores (one torch thread; 14 frames at 64x64, latent 14x4x8x8).
"""
from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from methods.registry import METHODS, get_method, parse_spec  # noqa: E402

H = W = 64
FRAMES = 14
ROUNDS = 3                      # pytest-benchmark rounds when enabled
BAND = (0.5, 2.0)               # measured / expected ratio
ATTEMPTS = 3
# The spec each registered method is gated with (svd:25 is Table 1's costliest row).
GATE_SPECS = {"svd": "svd:25", "animatelcm": "animatelcm:4", "onestep": "onestep:1", "sfv": "sfv:1",
              "ufogen": "ufogen:1", "ladd": "ladd:1", "lcm": "lcm:4"}
NO_UNET = {"dummy", "static", "real"}   # no model: nothing to count
OWN_PIPELINE = {"i2v"}                  # no tiny SVD stack: its calls are counted in tests/methods/test_i2v.py


def expected_calls(spec: str) -> tuple[int, int]:
    """(UNet calls, batch) per video, from the paper's protocol (docs/reference.md#latency-column)."""
    s = parse_spec(spec)
    if s.name == "svd":
        return s.steps, 2
    if s.name in ("animatelcm", "lcm"):
        return s.steps, 1
    if s.name in ("onestep", "sfv", "ufogen", "ladd"):
        return 1, 1
    raise AssertionError(f"no expected UNet calls for {spec}: add the method to the gate")


class UNetProbe:
    """Forward hooks on a UNet module: the batch and the seconds of every call."""

    def __init__(self, module):
        self.batches, self.seconds, self._t0 = [], [], None
        self._hooks = [module.register_forward_pre_hook(self._pre, with_kwargs=True),
                       module.register_forward_hook(self._post)]

    def _pre(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        self.batches.append(int(sample.shape[0]))
        self._t0 = time.perf_counter()

    def _post(self, module, args, output):
        self.seconds.append(time.perf_counter() - self._t0)

    def reset(self):
        self.batches, self.seconds = [], []

    def remove(self):
        for h in self._hooks:
            h.remove()


@pytest.fixture(scope="module")
def methods():
    """spec -> method loaded on the tiny stack (CPU, fp32), loaded once per module."""
    cache = {}

    def get(spec):
        if spec not in cache:
            cache[spec] = get_method(spec).load("tiny", "cpu", "fp32")
        return cache[spec]

    get("onestep:1").warmup(H, W, num_frames=FRAMES)  # kernel selection, allocator: outside every timing
    return get


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (1, H, W, 3), dtype=np.uint8)


def test_every_registered_method_is_gated():
    assert set(METHODS) - NO_UNET - OWN_PIPELINE == set(GATE_SPECS)


@pytest.mark.parametrize("name", sorted(GATE_SPECS))
def test_unet_calls_per_video(name, methods, image, benchmark):
    spec = GATE_SPECS[name]
    m = methods(spec)
    probe = UNetProbe(m.pipe.unet)
    try:
        def generate():
            probe.reset()
            return m.generate(image, [0], num_frames=FRAMES)

        video = benchmark.pedantic(generate, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    finally:
        probe.remove()
    calls, batch = expected_calls(spec)
    benchmark.extra_info.update(spec=spec, unet_calls=calls, unet_batch=batch)
    assert probe.batches == [batch] * calls, f"{spec}: UNet calls (batch sizes) {probe.batches}"
    assert m.unet_calls_per_video() == {"calls": calls, "batch": batch}
    assert m.unet_call_log == probe.batches
    assert video.shape == (1, FRAMES, H, W, 3) and video.dtype == np.uint8


def _direct_call_ratio(unet, frames: int, pairs: int = 7) -> float:
    """Median over interleaved pairs of (batch-2 call) / (batch-1 call) time, sampler-like inputs."""
    cfg = unet.config
    g = torch.Generator().manual_seed(0)

    def inputs(b):
        return dict(sample=torch.randn(b, frames, cfg.in_channels, H // 8, W // 8, generator=g),
                    timestep=torch.tensor(0.25 * np.log(700.0)),
                    encoder_hidden_states=torch.randn(b, 1, cfg.cross_attention_dim, generator=g),
                    added_time_ids=torch.tensor([[6.0, 127.0, 0.02]] * b), return_dict=False)

    x1, x2 = inputs(1), inputs(2)
    ratios = []
    with torch.no_grad():
        unet(**x1), unet(**x2)
        for _ in range(pairs):
            t0 = time.perf_counter()
            unet(**x1)
            t1 = time.perf_counter()
            unet(**x2)
            t2 = time.perf_counter()
            ratios.append((t2 - t1) / (t1 - t0))
    return statistics.median(ratios)


def test_svd25_vs_sfv1_unet_time_ratio(methods, image):
    svd, sfv = methods("svd:25"), methods("sfv:1")
    calls_svd, batch_svd = expected_calls("svd:25")
    calls_sfv, batch_sfv = expected_calls("sfv:1")
    assert (batch_svd, batch_sfv) == (2, 1)
    attempts = []
    for _ in range(ATTEMPTS):
        r = _direct_call_ratio(svd.pipe.unet, FRAMES)
        probe = UNetProbe(svd.pipe.unet)
        try:
            svd.generate(image, [0], num_frames=FRAMES)
            svd_calls = list(probe.seconds)
        finally:
            probe.remove()
        probe = UNetProbe(sfv.pipe.unet)
        try:
            for seed in range(5):
                sfv.generate(image, [seed], num_frames=FRAMES)
            sfv_calls = list(probe.seconds)
        finally:
            probe.remove()
        assert len(svd_calls) == calls_svd and len(sfv_calls) == 5 * calls_sfv
        expected = (calls_svd / calls_sfv) * r
        measured = calls_svd * statistics.median(svd_calls) / (calls_sfv * statistics.median(sfv_calls))
        as_summed = sum(svd_calls) / statistics.median(sfv_calls)
        attempts.append(measured / expected)
        print(f"\nsvd:25 vs sfv:1 UNet time: measured {measured:.1f}x (summed {as_summed:.1f}x), expected "
              f"25 x {r:.2f} = {expected:.1f}x, measured/expected {measured / expected:.2f} (band {BAND})")
        if BAND[0] <= measured / expected <= BAND[1]:
            break
    assert BAND[0] <= attempts[-1] <= BAND[1], f"measured/expected ratios {attempts} outside {BAND}"
