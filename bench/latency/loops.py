"""Each method's own denoising loop, timed as a whole with the options-applied UNet, and a check that
the real adapter (load + generate) gives the same calls."""
from __future__ import annotations

import time

import numpy as np
import torch

from methods.models.conditioning import Condition
from methods.models.timing import UNetTimer, sync
from methods.registry import get_method, parse_specs
from methods.svd import SVDFamilyMethod
from sfv_core.errors import UserError
from sfv_core.protocol import GenerationConditions

from .models import Shape


def method_plan(specs_text: str, base_frames: int) -> list[dict]:
    """Per spec: registry name, steps, CFG, UNet calls and batch per video, frames generated."""
    plan = []
    for spec in parse_specs(specs_text):
        m = get_method(spec)
        if not isinstance(m, SVDFamilyMethod):
            raise UserError(f"--methods {spec.key}: `sfv-bench latency` times SVD-family UNets; {spec.name} rows "
                            f"are timed by `sfv-bench run` (latency.json, with latency.parts for i2v)")
        calls = m.unet_calls_per_video()
        frames = m.frames_to_generate(base_frames)
        plan.append({"spec": spec.key, "name": spec.name, "steps": spec.steps, "cfg": bool(m.cfg),
                     "calls": int(calls["calls"]), "batch": int(calls["batch"]), "frames": int(frames),
                     "method": m})
    return plan


def method_loop(entry: dict, runner, unet_config: dict, hw, device, seed: int = 0):
    """A callable running one video's denoising loop with the method's own sampler, and its UNet log.

    Calls the adapter's sampler ``sample(unet, cond, noise, generators)`` with the options-applied
    UNet (wrapped in a UNetTimer that logs every call's batch) on random conditioning tensors (the
    loop's cost does not depend on their values); the adapter loads nothing.
    """
    m = entry["method"]
    dtype = runner.dtype
    g = torch.Generator().manual_seed(seed)
    frames = entry["frames"]
    lat_c = unet_config["in_channels"] // 2
    cond = Condition(torch.randn(1, 1, unet_config["cross_attention_dim"], generator=g).to(device, dtype),
                     torch.randn(1, frames, lat_c, *hw, generator=g).to(device, dtype),
                     torch.tensor([[6.0, 127.0, 0.02]]).to(device, dtype))
    noise = torch.randn(1, frames, lat_c, *hw, generator=g).to(device, dtype)
    counter = UNetTimer(runner)

    @torch.no_grad()
    def run():
        gens = [torch.Generator(device).manual_seed(seed)]
        return m.sample(counter, cond, noise, gens)

    return run, counter


def method_run_check(entry: dict, stack, device, dtype_name: str, shape: Shape, chunk: int, estimate_ms: float,
                     variant=None):
    """Generate one video with the real adapter (``load`` + ``generate``, eager, its own timer)."""
    try:
        m = get_method(entry["spec"]).load(stack, device, dtype_name, variant=variant)
        conditions = GenerationConditions(num_frames=shape.num_frames, decode_chunk_size=chunk)
        m.warmup(shape.height, shape.width, conditions)
        img = np.full((1, shape.height, shape.width, 3), 127, np.uint8)
        sync(device)
        t0 = time.perf_counter()
        m.generate(img, [0], conditions)
        sync(device)
        wall = (time.perf_counter() - t0) * 1e3
    except UserError as e:
        return {"skipped": str(e)}
    unet_ms = 1e3 * sum(m.last_unet_times())
    log = list(m.unet_call_log)
    return {"wall_ms": wall, "unet_ms": unet_ms, "calls_logged": len(log), "batches_logged": sorted(set(log)),
            "unet_ms_vs_estimate": unet_ms / estimate_ms if estimate_ms else None,
            "note": "real adapter, eager, its own dtype handling; wall includes CPU-side conditioning"}
