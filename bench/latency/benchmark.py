"""The latency benchmark: UNet passes, components (image encoder, VAE encode/decode), each method's
loop and its end-to-end breakdown, FLOPs, peak memory and the precision-checked options."""
from __future__ import annotations

import copy
import gc
import logging
import time
from dataclasses import dataclass, field

import torch

from methods.models.conditioning import clip_preprocess, decode_latents
from methods.models.configs import CLIP_MEAN, CLIP_STD, FULL_CONFIGS, param_count
from methods.models.timing import cuda_device, is_cuda, peak_memory, peak_rss_bytes, summarize, time_ms
from sfv_core.env import environment, git_commit
from sfv_core.paper import DEFAULT_SPECS, GPU, paper_row

from . import SCHEMA
from .loops import method_loop, method_plan, method_run_check
from .models import Shape, count_all_flops, load_models, stack_configs, unet_inputs
from .options import DEFAULT_TOLERANCE, UNetRunner, cast_inputs, option_space, search_options, to_channels_last

log = logging.getLogger(__name__)


@dataclass
class Settings:
    shape: Shape
    device: str = "cpu"
    stack: str | None = None
    variant: str | None = None
    methods: str = DEFAULT_SPECS
    option_values: dict = field(default_factory=dict)
    tolerance: float = DEFAULT_TOLERANCE
    warmup: int = 1
    repeats: int = 5
    loop_repeats: int = 3
    decode_chunk_size: int = 14
    method_check: bool = True
    seed: int = 0


def _suffix(frames: int, shape: Shape) -> str:
    return "" if frames == shape.num_frames else f"_{frames}f"


def time_unet_passes(s: Settings, runner, unet_config: dict, plan: list, frame_counts, peak: dict) -> dict:
    """Median batch-1 and batch-2 UNet passes at the generation frames (and the batches methods use at
    other frame counts)."""
    hw = s.shape.latent_hw()
    out = {}
    for frames in sorted(frame_counts):
        suffix = _suffix(frames, s.shape)
        batches = (1, 2) if not suffix else sorted({e["batch"] for e in plan if e["frames"] == frames})
        for b in batches:
            key = f"batch{b}{suffix}"
            inp = cast_inputs(unet_inputs(unet_config, b, frames, hw, s.device, torch.float32, s.seed), runner.dtype)
            with peak_memory(s.device, peak, f"unet_{key}"):
                ms = time_ms(lambda: runner.run(inp), s.device, s.warmup, s.repeats)
            out[key] = {**summarize(ms), "frames": frames, "batch": b}
            log.info(f"UNet pass {key}: median {out[key]['median_ms']:.2f} ms (n={len(ms)})")
    return out


def time_components(s: Settings, vae, vae_enc, clip, dtype, frame_counts, peak: dict) -> dict:
    """Image encoder (CLIP preprocessing on the device + ViT), VAE encode, VAE decode per frame count."""
    device, shape = s.device, s.shape
    g = torch.Generator().manual_seed(s.seed)
    pixels = torch.rand(1, 3, shape.height, shape.width, generator=g).to(device)

    @torch.no_grad()
    def image_encoder():
        return clip(clip_preprocess(pixels, CLIP_MEAN, CLIP_STD, clip.config.image_size).to(dtype)).image_embeds

    aug = (pixels * 2 - 1 + 0.02 * torch.randn(pixels.shape, generator=g).to(device)).to(vae_enc.dtype)

    @torch.no_grad()
    def vae_encode():
        return vae_enc.encode(aug).latent_dist.mode()

    out = {}
    with peak_memory(device, peak, "image_encoder"):
        out["image_encoder"] = summarize(time_ms(image_encoder, device, s.warmup, s.repeats))
    with peak_memory(device, peak, "vae_encode"):
        out["vae_encode"] = summarize(time_ms(vae_encode, device, s.warmup, s.repeats))
    for frames in sorted(frame_counts):
        z = torch.randn(1, frames, vae.config.latent_channels, *shape.latent_hw(), generator=g).to(device, dtype)
        with peak_memory(device, peak, f"vae_decode_{frames}f"):
            out[f"vae_decode_{frames}f"] = summarize(time_ms(
                lambda: decode_latents(vae, z, s.decode_chunk_size or frames), device, s.warmup, s.repeats))
    for k, v in out.items():
        log.info(f"{k}: median {v['median_ms']:.2f} ms")
    return out


def time_method_loops(s: Settings, runner, unet_config: dict, plan: list, unet_pass: dict, components: dict,
                      flops: dict, peak: dict) -> list[dict]:
    """Per method: its own sampler loop timed as a whole (checked against the registry's UNet calls),
    calls x median pass, and the end-to-end breakdown."""
    rows = []
    chunk = s.decode_chunk_size
    for e in plan:
        pass_key = f"batch{e['batch']}{_suffix(e['frames'], s.shape)}"
        estimate = e["calls"] * unet_pass[pass_key]["median_ms"]
        run, counter = method_loop(e, runner, unet_config, s.shape.latent_hw(), s.device, s.seed)
        loops = []

        def counted(run=run):
            loops.append(1)
            run()

        with peak_memory(s.device, peak, f"loop_{e['spec']}"):
            loop_ms = time_ms(counted, s.device, 1, s.loop_repeats)
        observed = counter.calls[-e["calls"]:] if counter.calls else []
        if len(counter.calls) != e["calls"] * len(loops) or set(observed) != {e["batch"]}:
            raise RuntimeError(f"{e['spec']}: the sampler made {len(counter.calls)} UNet calls with batches "
                               f"{sorted(set(counter.calls))} over {len(loops)} loops; the registry says "
                               f"{e['calls']} x batch {e['batch']} per video")
        loop = summarize(loop_ms)
        dec = components[f"vae_decode_{e['frames']}f"]["median_ms"]
        e2e = {"image_encoder_ms": components["image_encoder"]["median_ms"],
               "vae_encode_ms": components["vae_encode"]["median_ms"], "unet_loop_ms": loop["median_ms"],
               "vae_decode_ms": dec, "decode_chunk_size": chunk or e["frames"], "frames_decoded": e["frames"]}
        e2e["total_ms"] = e2e["image_encoder_ms"] + e2e["vae_encode_ms"] + e2e["unet_loop_ms"] + dec
        unet_flops = e["calls"] * flops[f"unet_{pass_key}"]
        row = {k: e[k] for k in ("spec", "name", "steps", "cfg", "calls", "batch", "frames")}
        row.update(unet_ms_median=estimate, unet_loop_ms=loop["median_ms"], unet_loop=loop,
                   loop_vs_estimate=loop["median_ms"] / estimate, unet_flops=unet_flops,
                   e2e_flops=unet_flops + flops["image_encoder"] + flops["vae_encode"]
                   + flops[f"vae_decode_{e['frames']}f"], e2e=e2e, paper=_paper(e["spec"]), method_run=None)
        log.info(f"{e['spec']}: {e['calls']} x batch {e['batch']} -> UNet {estimate:.1f} ms "
                 f"(loop {loop['median_ms']:.1f} ms), end to end {e2e['total_ms']:.1f} ms")
        rows.append(row)
    return rows


def choose_runner(unet_fp32, space: dict, inputs1: dict, s: Settings):
    """(runner, Options, precision check): the search's own runner of the chosen options, so a compiled UNet is
    compiled once for the search and the timings; a new runner only when the choice failed the check."""
    kept: dict = {}
    opts, precision = search_options(unet_fp32, space, inputs1, s.device, tolerance=s.tolerance, warmup=s.warmup,
                                     repeats=max(3, min(s.repeats, 10)), keep=kept)
    if not precision["passed"]:
        log.warning(f"WARNING: {opts.label()} is {precision['chosen_rel_l2']:.3g} off fp32 eager "
                    f"(tolerance {s.tolerance}); timings are reported with passed=false")
    log.info(f"options: {opts.label()}")
    return kept.get("runner") or UNetRunner(unet_fp32, opts, s.device), opts, precision


def run_benchmark(s: Settings) -> dict:
    """Run every measurement; return the result dict (schema in ``command.cli_latency``'s doc). On CUDA
    everything runs with ``s.device`` as the current device (``cuda:1`` is timed on GPU 1)."""
    with cuda_device(s.device):
        return _run_benchmark(s)


def _run_benchmark(s: Settings) -> dict:
    device, shape = s.device, s.shape
    stack = s.stack if s.stack is not None or shape.name != "tiny" else "tiny"
    configs = stack_configs(stack) if stack is not None else FULL_CONFIGS
    space = option_space(s.option_values, device)
    plan = method_plan(s.methods, shape.num_frames) if s.methods else []
    frame_counts = {shape.num_frames} | {e["frames"] for e in plan}

    log.info(f"counting FLOPs on the meta device ({shape.name} shape, frames {sorted(frame_counts)})")
    flops = count_all_flops(configs, shape, frame_counts, s.decode_chunk_size)

    log.info(f"loading models ({stack or 'full-size configs, random weights'}) on {device}")
    models, source = load_models(stack, configs, device, s.seed, s.variant)
    model_info = {"source": source, **{f"{k}_params": param_count(m) for k, m in models.items()}}

    log.info("precision check / option search")
    inputs1 = unet_inputs(configs["unet"], 1, shape.num_frames, shape.latent_hw(), device, torch.float32, s.seed)
    runner, opts, precision = choose_runner(models["unet"], space, inputs1, s)
    vae, vae_enc, clip = _models_for_timing(models, runner, opts, device)

    peak: dict = {}
    unet_pass = time_unet_passes(s, runner, configs["unet"], plan, frame_counts, peak)
    components = time_components(s, vae, vae_enc, clip, runner.dtype, frame_counts, peak)
    rows = time_method_loops(s, runner, configs["unet"], plan, unet_pass, components, flops, peak)
    if s.method_check and stack is not None and plan:
        log.info("method check: real adapters (load + generate)")
        for row in rows:
            row["method_run"] = method_run_check(row, stack, device, opts.dtype, shape, s.decode_chunk_size,
                                                 row["unet_ms_median"], s.variant)
    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": git_commit(),
        "env": environment(device),
        "options": opts.to_dict(),
        "shape": shape.to_dict(),
        "models": model_info,
        "timing": {"warmup": s.warmup, "repeats": s.repeats, "loop_repeats": s.loop_repeats, "seed": s.seed},
        "unet_pass": unet_pass,
        "components": components,
        "flops": flops,
        "tflops_achieved": {f"unet_{k}": flops[f"unet_{k}"] / (v["median_ms"] / 1e3) / 1e12
                            for k, v in unet_pass.items()},
        "peak_mem_bytes": peak.get("unet_batch1"),
        "peak_mem": peak,
        "peak_rss_bytes": None if is_cuda(device) else peak_rss_bytes(),
        "decode_chunk_size": s.decode_chunk_size,
        "methods": rows,
        "precision_check": precision,
    }


def _models_for_timing(models: dict, runner, opts, device):
    """(VAE, the VAE that encodes, image encoder) in the runner's dtype, channels-last when the options are;
    the fp32 UNet is dropped when the runner holds its own copy. The encoding VAE is an fp32 copy where the
    pipeline upcasts (fp16 with ``force_upcast``)."""
    if runner.model is not models["unet"]:
        models["unet"] = None
        gc.collect()
        if is_cuda(device):
            torch.cuda.empty_cache()
    for k in ("vae", "image_encoder"):
        models[k] = models[k].to(runner.dtype)
        if opts.channels_last:
            to_channels_last(models[k])
    vae = models["vae"]
    vae_enc = copy.deepcopy(vae).float() if runner.dtype == torch.float16 and vae.config.force_upcast else vae
    return vae, vae_enc, models["image_encoder"]


def _paper(spec: str):
    row = paper_row(spec)
    return None if row is None else {"name": row["name"], "steps": row["steps"], "latency_s": row["latency_s"],
                                     "gpu": GPU}
