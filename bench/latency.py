"""`sfv-bench latency`: time what Table 1's latency column means, on the real SVD architectures.

What is measured (SF-V paper sec. 4.2; FACTS sec. 1, 2, 7):

* **UNet pass** -- one forward of the SVD UNet at batch 1 and batch 2 (CFG batches cond + uncond)
  on random inputs of the generation shape. ``paper``: 14 frames at 1024x576, i.e. a
  14x8x72x128 UNet input (4 noisy + 4 image-latent channels), and 25 frames for the 25-frame
  AnimateLCM* model; ``tiny``: the tiny test stack at 14 frames 64x64 (CPU tests).
* **Denoising process** of each method spec = all its UNet calls for one video (the Table 1
  latency). Calls come from the methods registry (``svd:N`` -> N batch-2 calls, ``animatelcm:N``
  -> N batch-1 calls at 25 frames, one-step family -> 1 batch-1 call). Reported twice:
  ``unet_ms_median`` = calls x median pass, and ``unet_loop_ms`` = the method's own sampler loop
  (``Method.sample``: scaling, CFG combination, scheduler updates and the UNet calls) timed as a
  whole, which checks the sum.
* **End to end** per method: image encoder (antialiased resize to 224, CLIP normalisation and
  ViT-H/14, on the device), VAE encode of the noise-augmented image, UNet loop, VAE decode of all
  generated frames in chunks of ``decode_chunk_size`` (recorded: it changes the output), total.
* **FLOPs** of every part, counted with ``torch.utils.flop_counter.FlopCounterMode`` on the
  ``meta`` device (no memory, seconds on a CPU; full size: UNet 44.8 T at batch 1, VAE decode of
  14 frames 97.2 T, VAE encode 2.6 T, CLIP 0.33 T), and the achieved TFLOP/s of the UNet pass.
* **Peak memory**: ``torch.cuda.max_memory_allocated`` over each measurement (all models
  resident); on a CPU the process's peak RSS instead.

Models: the full-size configs with random weights (UNet 1.525 B parameters, temporal VAE 97.7 M,
CLIP ViT-H/14 632 M; timing does not depend on the values), or real weights from ``--stack``
(any stack spec of ``methods.stacks``). ``--shape tiny`` uses the tiny stack by default.

Clocks: on CUDA each repeat is bracketed by CUDA events after ``warmup`` untimed runs; on a CPU
``time.perf_counter`` (monotonic). Summaries: median, p10, p90 (linear interpolation), min, n.

Inference options (UNet; dtype and channels_last also apply to the VAE and CLIP): ``dtype``
(fp32 | fp16 | bf16), ``attention`` (SDPA backend: default | math | flash | efficient | cudnn),
``channels_last``, ``compile`` (``torch.compile``, mode ``default``; with CUDA graphs mode
``reduce-overhead``), ``cuda_graphs`` (eager: one ``torch.cuda.CUDAGraph`` per input shape).
Each option takes one value, a comma list, or ``auto`` (CUDA: dtype bf16,fp16,fp32;
channels_last, compile, cuda_graphs off,on; attention default. CPU: fp32, off, off, off).
Lists are searched greedily in the order dtype, attention, channels_last, compile, cuda_graphs:
for each option in turn every value is tried with the choices made so far, and the fastest
(median batch-1 pass) *eligible* value kept. Eligible = its batch-1 UNet output on the same
seeded inputs matches the fp32 eager output (TF32 off) within ``--tolerance`` relative L2 error
||y - y_ref|| / ||y_ref|| (default 0.02). Why 0.02: a bf16 pass of the full-size UNet
(random weights, measured on a CPU at a 14x8x16x16 input) is 1.46% off, fp16 0.57%; the tiny
UNet in bf16 1.56%: at 1e-2 bf16 would never qualify. The check runs with every benchmark (also
for fixed options) and is written to the JSON (``precision_check``).
"""
from __future__ import annotations

import contextlib
import copy
import gc
import math
import platform
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .fsutil import UserError, atomic_write_json, atomic_write_text

SCHEMA = "sfv-bench-latency/1"
SIGMA_MAX = 700.0
DEFAULT_TOLERANCE = 0.02
OPTION_ORDER = ("dtype", "attention", "channels_last", "compile", "cuda_graphs")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ATTENTION = ("default", "math", "flash", "efficient", "cudnn")
AUTO_SPACE = {
    "cuda": {"dtype": ["bf16", "fp16", "fp32"], "attention": ["default"], "channels_last": [False, True],
             "compile": [False, True], "cuda_graphs": [False, True]},
    "cpu": {"dtype": ["fp32"], "attention": ["default"], "channels_last": [False], "compile": [False],
            "cuda_graphs": [False]},
}
# Table 1's specs that the suite can regenerate (bench.paper.TABLE1, rows with a spec).
DEFAULT_METHODS = "svd:25,svd:16,svd:8,svd:4,animatelcm:8,animatelcm:4,animatelcm:2,ufogen:1,ladd:1,sfv:1"
SHAPES = {"paper": (14, 576, 1024), "tiny": (14, 64, 64)}  # frames, height, width

# Full-size architectures (hub configs of stabilityai/stable-video-diffusion-img2vid: unet/, vae/,
# image_encoder/ = laion CLIP ViT-H/14 vision tower). Parameter counts are checked in the tests.
FULL_CONFIGS = {
    "unet": {
        "sample_size": 96, "in_channels": 8, "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"],
        "up_block_types": ["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 3,
        "block_out_channels": [320, 640, 1280, 1280], "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 768, "layers_per_block": 2, "cross_attention_dim": 1024,
        "transformer_layers_per_block": 1, "num_attention_heads": [5, 10, 20, 20], "num_frames": 25,
    },
    "vae": {
        "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 4,
        "sample_size": 768, "scaling_factor": 0.18215, "force_upcast": True,
    },
    "image_encoder": {
        "hidden_size": 1280, "intermediate_size": 5120, "projection_dim": 1024, "num_hidden_layers": 32,
        "num_attention_heads": 16, "num_channels": 3, "image_size": 224, "patch_size": 14,
        "hidden_act": "gelu", "layer_norm_eps": 1e-5,
    },
}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ---------------------------------------------------------------------------------------------
# options
@dataclass(frozen=True)
class Options:
    dtype: str = "fp32"
    attention: str = "default"
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in OPTION_ORDER}

    def label(self) -> str:
        parts = [self.dtype]
        if self.attention != "default":
            parts.append(f"sdpa-{self.attention}")
        parts += [n for n in ("channels_last", "compile", "cuda_graphs") if getattr(self, n)]
        return "+".join(parts) if len(parts) > 1 else f"{self.dtype} eager"


def _parse_bool(v: str, name: str) -> bool:
    low = v.strip().lower()
    if low in ("on", "true", "1", "yes"):
        return True
    if low in ("off", "false", "0", "no"):
        return False
    raise UserError(f"--{name.replace('_', '-')} takes on, off, a list like off,on, or auto (got {v!r})")


def option_space(values: dict, device: str) -> dict:
    """{option: [candidate values]} from the CLI strings (value, comma list or 'auto')."""
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    space = {}
    for name in OPTION_ORDER:
        text = str(values.get(name) or "auto").strip().lower()
        if text == "auto":
            space[name] = list(AUTO_SPACE[kind][name])
            continue
        items = [s.strip() for s in text.split(",") if s.strip()]
        out = []
        for item in items:
            if name == "dtype":
                if item not in DTYPES:
                    raise UserError(f"--dtype takes fp32, fp16, bf16, a comma list or auto (got {item!r})")
                out.append(item)
            elif name == "attention":
                if item not in ATTENTION:
                    raise UserError(f"--attention takes {', '.join(ATTENTION)}, a comma list or auto (got {item!r})")
                out.append(item)
            else:
                out.append(_parse_bool(item, name))
        if not out:
            raise UserError(f"--{name.replace('_', '-')} is empty")
        if name == "cuda_graphs" and True in out and kind != "cuda":
            raise UserError("--cuda-graphs on needs a CUDA device (use --device cuda or --cuda-graphs off)")
        space[name] = list(dict.fromkeys(out))
    return space


# ---------------------------------------------------------------------------------------------
# shapes, configs, models
@dataclass(frozen=True)
class Shape:
    name: str
    num_frames: int
    height: int
    width: int

    def latent_hw(self) -> tuple[int, int]:
        return self.height // 8, self.width // 8

    def to_dict(self) -> dict:
        h, w = self.latent_hw()
        return {"name": self.name, "num_frames": self.num_frames, "height": self.height, "width": self.width,
                "latent": [self.num_frames, 4, h, w]}


def make_shape(name: str, num_frames=None, height=None, width=None) -> Shape:
    if name not in SHAPES:
        raise UserError(f"--shape takes tiny or paper (got {name!r})")
    f, h, w = SHAPES[name]
    shape = Shape(name, int(num_frames or f), int(height or h), int(width or w))
    if shape.height % 8 or shape.width % 8 or shape.num_frames < 1:
        raise UserError(f"shape {shape.width}x{shape.height}x{shape.num_frames}: size must be a multiple of 8 "
                        f"and frames >= 1")
    return shape


def stack_configs(stack) -> dict:
    """{'unet', 'vae', 'image_encoder'} configs of a stack (spec or folder), read from its files."""
    import json

    from methods.stacks import resolve_stack

    folder = resolve_stack(stack)
    out = {}
    for sub in ("unet", "vae", "image_encoder"):
        path = folder / sub / "config.json"
        if not path.is_file():
            raise UserError(f"stack {folder} has no {sub}/config.json: expected an SVD pipeline folder")
        cfg = json.loads(path.read_text())
        out[sub] = {k: v for k, v in cfg.items() if not k.startswith("_") and k not in (
            "architectures", "transformers_version", "torch_dtype", "dtype", "model_type")}
    return out


def _build(configs: dict, device) -> dict:
    """Random-init models from configs on ``device`` (``meta``: shapes only, no memory)."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.device(device):
        models = {
            "unet": UNetSpatioTemporalConditionModel.from_config(configs["unet"]),
            "vae": AutoencoderKLTemporalDecoder.from_config(configs["vae"]),
            "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(**configs["image_encoder"])),
        }
    # A few parameters are made with the legacy torch.Tensor([...]) constructor (AlphaBlender's
    # mix_factor), which ignores the default device: move them too.
    return {k: m.to(device).eval().requires_grad_(False) for k, m in models.items()}


def build_meta(configs: dict) -> dict:
    return _build(configs, "meta")


def load_models(stack, configs: dict | None, device, seed: int = 0) -> tuple[dict, str]:
    """fp32 models on ``device``: from a stack folder (real weights) or random from ``configs``."""
    if stack is not None:
        from methods.stacks import load_pipeline

        pipe = load_pipeline(stack, device, torch.float32)
        models = {"unet": pipe.unet, "vae": pipe.vae, "image_encoder": pipe.image_encoder}
        for m in models.values():
            m.eval().requires_grad_(False)
        return models, f"stack {stack}"
    torch.manual_seed(seed)
    return _build(configs, device), "random weights (configs, seed %d)" % seed


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# inputs, FLOPs
def unet_inputs(unet_config: dict, batch: int, frames: int, hw, device, dtype, seed: int = 0) -> dict:
    """Seeded random UNet inputs of the real layout (what SVDDenoiser passes at sigma = 700)."""
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    sample = torch.randn(batch, frames, unet_config["in_channels"], h, w, generator=g)
    ehs = torch.randn(batch, 1, unet_config["cross_attention_dim"], generator=g)
    ids = torch.tensor([[6.0, 127.0, 0.02]]).repeat(batch, 1)
    return {"sample": sample.to(device, dtype), "timestep": torch.tensor(0.25 * math.log(SIGMA_MAX), device=device),
            "encoder_hidden_states": ehs.to(device, dtype), "added_time_ids": ids.to(device, dtype)}


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops())


def _decode(vae, z, chunk: int):
    """Temporal VAE decode of latents (T, 4, h, w) in chunks of ``chunk`` frames (as methods.conditioning)."""
    z = z / vae.config.scaling_factor
    return torch.cat([vae.decode(z[i:i + chunk], num_frames=len(z[i:i + chunk])).sample
                      for i in range(0, len(z), chunk)])


def count_all_flops(configs: dict, shape: Shape, frame_counts, decode_chunk_size: int) -> dict:
    """FLOPs of every timed part, counted on the meta device."""
    meta = build_meta(configs)
    hw = shape.latent_hw()
    out = {}
    for frames in sorted(frame_counts):
        suffix = "" if frames == shape.num_frames else f"_{frames}f"
        for b in (1, 2):
            inp = unet_inputs(configs["unet"], b, frames, hw, "meta", torch.float32)
            out[f"unet_batch{b}{suffix}"] = count_flops(lambda: meta["unet"](**inp, return_dict=False))
        z = torch.empty(frames, meta["vae"].config.latent_channels, *hw, device="meta")
        out[f"vae_decode_{frames}f"] = count_flops(
            lambda: _decode(meta["vae"], z, decode_chunk_size or frames))
    img = torch.empty(1, 3, shape.height, shape.width, device="meta")
    out["vae_encode"] = count_flops(lambda: meta["vae"].encode(img).latent_dist.mode())
    size = configs["image_encoder"].get("image_size", 224)
    clip_in = torch.empty(1, 3, size, size, device="meta")
    out["image_encoder"] = count_flops(lambda: meta["image_encoder"](clip_in).image_embeds)
    return out


# ---------------------------------------------------------------------------------------------
# timing
def _is_cuda(device) -> bool:
    return str(device).startswith("cuda")


def sync(device) -> None:
    if _is_cuda(device):
        torch.cuda.synchronize()


def time_ms(fn, device, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls.

    CUDA: a pair of CUDA events around each call (read after the end event completes); CPU:
    ``time.perf_counter`` (monotonic; CPU forward passes are synchronous).
    """
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(repeats):
        if _is_cuda(device):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(float(start.elapsed_time(end)))
        else:
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def summarize(ms) -> dict:
    a = np.asarray(ms, dtype=np.float64)
    return {"median_ms": float(np.median(a)), "p10_ms": float(np.percentile(a, 10)),
            "p90_ms": float(np.percentile(a, 90)), "min_ms": float(a.min()), "n": int(a.size)}


@contextlib.contextmanager
def peak_memory(device, out: dict, key: str):
    """Record the peak memory during the block in ``out[key]`` (CUDA: allocated bytes; CPU: None)."""
    if _is_cuda(device):
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
    yield
    if _is_cuda(device):
        sync(device)
        out[key] = int(torch.cuda.max_memory_allocated(device))
    else:
        out[key] = None


def _peak_rss_bytes() -> int | None:
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB
    except Exception:  # pragma: no cover - non-Linux
        return None


def _fp32_reference_math():
    """TF32 off for the fp32 reference (cuDNN convolutions use TF32 by default on Ampere+)."""
    from .detectors import tf32_disabled
    return tf32_disabled()


# ---------------------------------------------------------------------------------------------
# the UNet with options applied
def _sdpa_context(attention: str):
    if attention == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION,
               "efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[attention]
    return sdpa_kernel([backend])


def to_channels_last(model):
    """channels_last for every 4-D parameter (the 2-D convolutions); 5-D temporal convs stay as they are."""
    for p in model.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
    return model


class UNetRunner:
    """The UNet with inference options applied, called like the model:
    ``runner(sample, timestep, encoder_hidden_states=..., added_time_ids=..., return_dict=False)``.

    Holds its own copy of the weights when the options change them (dtype, channels_last). With
    CUDA graphs the returned tensor is the graph's static output, overwritten by the next call
    (``methods.sampling.SVDDenoiser`` consumes it before the next call).
    """

    def __init__(self, unet_fp32, opts: Options, device):
        self.opts, self.device = opts, device
        self.dtype = DTYPES[opts.dtype]
        model = unet_fp32
        if opts.dtype != "fp32" or opts.channels_last:
            model = copy.deepcopy(unet_fp32).to(self.dtype)
            if opts.channels_last:
                to_channels_last(model)
        self.model = model
        self.config = model.config
        self.fn = model
        if opts.compile:
            # Fresh dynamo state per compiled runner: every candidate compiles its own module copy
            # per input shape, which would otherwise pile up against the recompile limit.
            torch._dynamo.reset()
            mode = "reduce-overhead" if opts.cuda_graphs else "default"
            self.fn = torch.compile(model, mode=mode, dynamic=False)
        self._graphs: dict = {}

    def _eager(self, *args, **kwargs):
        if self.opts.compile and self.opts.cuda_graphs:
            # cudagraph trees: each call starts a new generation (the previous output is consumed)
            torch.compiler.cudagraph_mark_step_begin()
        with _sdpa_context(self.opts.attention):
            return self.fn(*args, **kwargs)

    def _graphed(self, args, kwargs):
        tensors = {**{f"a{i}": a for i, a in enumerate(args) if isinstance(a, torch.Tensor)},
                   **{k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}}
        key = tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(tensors.items()))
        entry = self._graphs.get(key)
        if entry is None:
            static = {k: v.clone() for k, v in tensors.items()}

            def call():
                a = [static.get(f"a{i}", x) for i, x in enumerate(args)]
                kw = {k: static.get(k, v) for k, v in kwargs.items()}
                return self._eager(*a, **kw)

            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    call()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = call()
            entry = self._graphs[key] = (graph, static, out)
        graph, static, out = entry
        for k, v in tensors.items():
            static[k].copy_(v)
        graph.replay()
        return out

    @torch.no_grad()
    def __call__(self, *args, **kwargs):
        if self.opts.cuda_graphs and not self.opts.compile:
            return self._graphed(args, kwargs)
        return self._eager(*args, **kwargs)

    def run(self, inputs: dict) -> torch.Tensor:
        return self(inputs["sample"], inputs["timestep"], encoder_hidden_states=inputs["encoder_hidden_states"],
                    added_time_ids=inputs["added_time_ids"], return_dict=False)[0]


def rel_l2(y, ref) -> float:
    y, ref = y.detach().double().cpu(), ref.detach().double().cpu()
    return float((y - ref).norm() / ref.norm().clamp_min(1e-30))


def _cast_inputs(inputs: dict, dtype) -> dict:
    return {k: (v if k == "timestep" else v.to(dtype)) for k, v in inputs.items()}


def search_options(unet_fp32, space: dict, inputs_fp32: dict, device, *, tolerance: float, warmup: int,
                   repeats: int, log=print) -> tuple[Options, dict]:
    """Greedy search over ``space`` (see module doc). Returns (chosen Options, precision_check dict)."""
    with _fp32_reference_math():
        ref = UNetRunner(unet_fp32, Options(), device).run(inputs_fp32).float().clone()
        sync(device)
    if not torch.isfinite(ref).all():
        raise UserError("the fp32 reference UNet output holds NaN/inf: broken weights?")
    results: dict = {}

    def evaluate(opts: Options) -> dict:
        if opts in results:
            return results[opts]
        rec = {"options": opts.to_dict(), "label": opts.label()}
        try:
            runner = UNetRunner(unet_fp32, opts, device)
            inputs = _cast_inputs(inputs_fp32, runner.dtype)
            ms = time_ms(lambda: runner.run(inputs), device, warmup, repeats)
            out = runner.run(inputs).float().clone()
            sync(device)
            err = rel_l2(out, ref)
            rec.update(rel_l2=err, passed=bool(math.isfinite(err) and err <= tolerance),
                       median_ms=float(np.median(ms)), n=len(ms))
        except Exception as e:  # a backend that does not apply here (no triton, no flash kernel ...)
            rec.update(rel_l2=None, passed=False, median_ms=None, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        finally:
            runner = None
            gc.collect()
            if _is_cuda(device):
                torch.cuda.empty_cache()
        log(f"  candidate {rec['label']}: " + (f"{rec['median_ms']:.2f} ms, rel L2 {rec['rel_l2']:.2e} "
                                               f"({'pass' if rec['passed'] else 'FAIL'})" if rec.get("error") is None
                                               else rec["error"]))
        results[opts] = rec
        return rec

    current = Options(**{k: space[k][0] for k in OPTION_ORDER})
    for name in OPTION_ORDER:
        if len(space[name]) < 2:
            continue
        tried = [evaluate(Options(**{**current.to_dict(), name: v})) for v in space[name]]
        ok = [r for r in tried if r["passed"]]
        if ok:
            current = Options(**min(ok, key=lambda r: r["median_ms"])["options"])
    chosen = evaluate(current)
    check = {
        "reference": "fp32 eager, default SDPA, TF32 off; same seeded batch-1 inputs",
        "metric": "relative L2 error ||y - y_ref|| / ||y_ref|| of the UNet output",
        "tolerance": tolerance,
        "search": "greedy over " + ", ".join(f"{k}={','.join(map(str, space[k]))}" for k in OPTION_ORDER),
        "candidates": list(results.values()),
        "chosen": current.to_dict(),
        "chosen_rel_l2": chosen["rel_l2"],
        "passed": bool(chosen["passed"]),
    }
    if chosen.get("error"):
        raise UserError(f"inference options {current.label()} do not run here: {chosen['error']}")
    return current, check


# ---------------------------------------------------------------------------------------------
# methods
def method_plan(specs_text: str, base_frames: int) -> list[dict]:
    """Per spec: registry name, steps, CFG, UNet calls and batch per video, frames generated."""
    from methods.registry import get_method, parse_specs

    plan = []
    for spec in parse_specs(specs_text):
        m = get_method(spec)
        calls = m.unet_calls_per_video()
        frames = m.frames_to_generate(base_frames) if hasattr(m, "frames_to_generate") else base_frames
        plan.append({"spec": spec.key, "name": spec.name, "steps": spec.steps, "cfg": bool(m.cfg),
                     "calls": int(calls["calls"]), "batch": int(calls["batch"]), "frames": int(frames),
                     "method": m})
    return plan


class _CountingUNet:
    """Counts the calls and batch sizes a sampler makes through it."""

    def __init__(self, runner):
        self.runner, self.calls = runner, []

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def __call__(self, sample, *args, **kwargs):
        self.calls.append(int(sample.shape[0]))
        return self.runner(sample, *args, **kwargs)


def method_loop(entry: dict, runner: UNetRunner, unet_config: dict, hw, device, seed: int = 0):
    """A callable running one video's denoising loop with the method's own sampler, and its UNet log.

    Uses the adapter's ``sample(cond, noise, generators)`` hook on random conditioning tensors
    (the loop's cost does not depend on their values) with the options-applied UNet.
    """
    from methods.conditioning import Condition

    m = entry["method"]
    dtype = runner.dtype
    g = torch.Generator().manual_seed(seed)
    frames = entry["frames"]
    lat_c = unet_config["in_channels"] // 2
    cond = Condition(torch.randn(1, 1, unet_config["cross_attention_dim"], generator=g).to(device, dtype),
                     torch.randn(1, frames, lat_c, *hw, generator=g).to(device, dtype),
                     torch.tensor([[6.0, 127.0, 0.02]]).to(device, dtype))
    noise = torch.randn(1, frames, lat_c, *hw, generator=g).to(device, dtype)
    counter = _CountingUNet(runner)
    m.timer, m.device, m.dtype = counter, torch.device(device), dtype

    @torch.no_grad()
    def run():
        gens = [torch.Generator(device).manual_seed(seed)]
        return m.sample(cond, noise, gens)

    return run, counter


def method_run_check(entry: dict, stack, device, dtype_name: str, shape: Shape, chunk: int, estimate_ms: float):
    """Generate one video with the real adapter (``load`` + ``generate``, eager, its own timer)."""
    from methods.registry import get_method

    try:
        m = get_method(entry["spec"]).load(stack, device, dtype_name)
        kw = dict(num_frames=shape.num_frames, decode_chunk_size=chunk)
        m.warmup(shape.height, shape.width, **kw)
        img = np.full((1, shape.height, shape.width, 3), 127, np.uint8)
        sync(device)
        t0 = time.perf_counter()
        m.generate(img, [0], **kw)
        sync(device)
        wall = (time.perf_counter() - t0) * 1e3
    except UserError as e:
        return {"skipped": str(e)}
    unet_ms = 1e3 * sum(m.last_unet_times())
    log = list(m.unet_call_log)
    return {"wall_ms": wall, "unet_ms": unet_ms, "calls_logged": len(log), "batches_logged": sorted(set(log)),
            "unet_ms_vs_estimate": unet_ms / estimate_ms if estimate_ms else None,
            "note": "real adapter, eager, its own dtype handling; wall includes CPU-side conditioning"}


# ---------------------------------------------------------------------------------------------
# environment
def _gpu_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device) -> dict:
    import diffusers
    import transformers

    cuda = _is_cuda(device)
    return {
        "device": str(device),
        "gpu_name": torch.cuda.get_device_name(torch.device(device)) if cuda else None,
        "driver": _gpu_driver() if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "threads": torch.get_num_threads(),
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "clock": "cuda-events" if cuda else "time.perf_counter",
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------------------------------------
# the benchmark
@dataclass
class Settings:
    shape: Shape
    device: str = "cpu"
    stack: str | None = None
    methods: str = DEFAULT_METHODS
    option_values: dict = field(default_factory=dict)
    tolerance: float = DEFAULT_TOLERANCE
    warmup: int = 1
    repeats: int = 5
    loop_repeats: int = 3
    decode_chunk_size: int = 14
    method_check: bool = True
    seed: int = 0


def run_benchmark(s: Settings, log=print) -> dict:
    """Run every measurement; return the result dict (schema in ``cli_latency``'s doc)."""
    device = s.device
    shape = s.shape
    hw = shape.latent_hw()
    if s.stack is None and shape.name == "tiny":
        s.stack = "tiny"
    configs = stack_configs(s.stack) if s.stack is not None else FULL_CONFIGS
    space = option_space(s.option_values, device)
    plan = method_plan(s.methods, shape.num_frames) if s.methods else []
    frame_counts = {shape.num_frames} | {e["frames"] for e in plan}

    log(f"counting FLOPs on the meta device ({shape.name} shape, frames {sorted(frame_counts)})")
    flops = count_all_flops(configs, shape, frame_counts, s.decode_chunk_size)

    log(f"loading models ({s.stack or 'full-size configs, random weights'}) on {device}")
    models, source = load_models(s.stack, configs, device, s.seed)
    model_info = {"source": source, **{f"{k}_params": param_count(m) for k, m in models.items()}}

    log("precision check / option search")
    inputs1 = unet_inputs(configs["unet"], 1, shape.num_frames, hw, device, torch.float32, s.seed)
    opts, precision = search_options(models["unet"], space, inputs1, device, tolerance=s.tolerance,
                                     warmup=s.warmup, repeats=max(3, min(s.repeats, 10)), log=log)
    if not precision["passed"]:
        log(f"WARNING: {opts.label()} is {precision['chosen_rel_l2']:.3g} off fp32 eager "
            f"(tolerance {s.tolerance}); timings are reported with passed=false")
    log(f"options: {opts.label()}")

    runner = UNetRunner(models["unet"], opts, device)
    dtype = runner.dtype
    if runner.model is not models["unet"]:
        models["unet"] = None  # the fp32 copy is no longer needed
        gc.collect()
        if _is_cuda(device):
            torch.cuda.empty_cache()
    for k in ("vae", "image_encoder"):
        models[k] = models[k].to(dtype)
        if opts.channels_last:
            to_channels_last(models[k])
    vae, clip = models["vae"], models["image_encoder"]
    vae_enc = vae
    if dtype == torch.float16 and vae.config.force_upcast:  # the pipeline encodes in fp32 then
        vae_enc = copy.deepcopy(vae).float()

    # -- UNet passes -----------------------------------------------------------------------------
    unet_pass, peak = {}, {}
    for frames in sorted(frame_counts):
        suffix = "" if frames == shape.num_frames else f"_{frames}f"
        # both batches at the generation frames; at other frame counts the batches methods use
        batches = (1, 2) if not suffix else sorted({e["batch"] for e in plan if e["frames"] == frames})
        for b in batches:
            key = f"batch{b}{suffix}"
            inp = _cast_inputs(unet_inputs(configs["unet"], b, frames, hw, device, torch.float32, s.seed), dtype)
            with peak_memory(device, peak, f"unet_{key}"):
                ms = time_ms(lambda: runner.run(inp), device, s.warmup, s.repeats)
            unet_pass[key] = {**summarize(ms), "frames": frames, "batch": b}
            log(f"UNet pass {key}: median {unet_pass[key]['median_ms']:.2f} ms (n={len(ms)})")
    tflops = {f"unet_{k}": flops[f"unet_{k}"] / (v["median_ms"] / 1e3) / 1e12 for k, v in unet_pass.items()}

    # -- components -----------------------------------------------------------------------------
    from methods.conditioning import resize_antialiased

    g = torch.Generator().manual_seed(s.seed)
    image = (torch.rand(1, 3, shape.height, shape.width, generator=g) * 2 - 1).to(device)
    mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)
    size = clip.config.image_size

    @torch.no_grad()
    def image_encoder():
        x = (resize_antialiased(image, (size, size)) + 1) / 2
        return clip(((x - mean) / std).to(dtype)).image_embeds

    aug = (image + 0.02 * torch.randn(image.shape, generator=g).to(device)).to(vae_enc.dtype)

    @torch.no_grad()
    def vae_encode():
        return vae_enc.encode(aug).latent_dist.mode()

    components = {}
    with peak_memory(device, peak, "image_encoder"):
        components["image_encoder"] = summarize(time_ms(image_encoder, device, s.warmup, s.repeats))
    with peak_memory(device, peak, "vae_encode"):
        components["vae_encode"] = summarize(time_ms(vae_encode, device, s.warmup, s.repeats))
    chunk = s.decode_chunk_size
    for frames in sorted(frame_counts):
        z = torch.randn(frames, vae.config.latent_channels, *hw, generator=g).to(device, dtype)
        with peak_memory(device, peak, f"vae_decode_{frames}f"):
            components[f"vae_decode_{frames}f"] = summarize(time_ms(
                torch.no_grad()(lambda: _decode(vae, z, chunk or frames)), device, s.warmup, s.repeats))
    for k, v in components.items():
        log(f"{k}: median {v['median_ms']:.2f} ms")

    # -- methods ----------------------------------------------------------------------------------
    rows = []
    for e in plan:
        suffix = "" if e["frames"] == shape.num_frames else f"_{e['frames']}f"
        pass_key = f"batch{e['batch']}{suffix}"
        estimate = e["calls"] * unet_pass[pass_key]["median_ms"]
        run, counter = method_loop(e, runner, configs["unet"], hw, device, s.seed)
        with peak_memory(device, peak, f"loop_{e['spec']}"):
            loop_ms = time_ms(run, device, 1, s.loop_repeats)
        observed = counter.calls[-e["calls"]:] if counter.calls else []
        if len(counter.calls) != e["calls"] * (1 + s.loop_repeats) or set(observed) != {e["batch"]}:
            raise RuntimeError(f"{e['spec']}: the sampler made {len(counter.calls)} UNet calls with batches "
                               f"{sorted(set(counter.calls))} over {1 + s.loop_repeats} loops; the registry says "
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
        log(f"{e['spec']}: {e['calls']} x batch {e['batch']} -> UNet {estimate:.1f} ms (loop {loop['median_ms']:.1f} ms), "
            f"end to end {e2e['total_ms']:.1f} ms")
        rows.append(row)

    if s.method_check and s.stack is not None and plan:
        log("method check: real adapters (load + generate)")
        for row in rows:
            row["method_run"] = method_run_check(row, s.stack, device, opts.dtype, shape, chunk, row["unet_ms_median"])

    result = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": _git_commit(),
        "env": environment(device),
        "options": opts.to_dict(),
        "shape": shape.to_dict(),
        "models": model_info,
        "timing": {"warmup": s.warmup, "repeats": s.repeats, "loop_repeats": s.loop_repeats, "seed": s.seed},
        "unet_pass": unet_pass,
        "components": components,
        "flops": flops,
        "tflops_achieved": tflops,
        "peak_mem_bytes": peak.get("unet_batch1"),
        "peak_mem": peak,
        "peak_rss_bytes": None if _is_cuda(device) else _peak_rss_bytes(),
        "decode_chunk_size": chunk,
        "methods": rows,
        "precision_check": precision,
    }
    return result


def _paper(spec: str):
    from .paper import GPU, paper_row

    row = paper_row(spec)
    return None if row is None else {"name": row["name"], "steps": row["steps"], "latency_s": row["latency_s"],
                                     "gpu": GPU}


# ---------------------------------------------------------------------------------------------
# report
def _fmt_ms(ms) -> str:
    if ms is None:
        return "—"
    return f"{ms / 1e3:.2f} s" if ms >= 1000 else f"{ms:.1f} ms" if ms >= 10 else f"{ms:.2f} ms"


def _tf(x) -> str:
    return f"{x / 1e12:.3g} T" if x >= 1e11 else f"{x / 1e9:.3g} G"


def render_markdown(r: dict) -> str:
    from .paper import GPU, table1_rows

    env, o, sh = r["env"], r["options"], r["shape"]
    dev = env["gpu_name"] or f"CPU ({env['cpu']}, {env['threads']} threads)"
    lat = "x".join(map(str, sh["latent"]))
    b1, b2 = r["unet_pass"]["batch1"], r["unet_pass"]["batch2"]
    pc = r["precision_check"]
    lines = [
        "# Latency: denoising process (UNet) and end to end",
        "",
        f"- Device: {dev}; driver {env['driver'] or '—'}; torch {env['torch']}, CUDA {env['cuda'] or '—'}, "
        f"diffusers {env['diffusers']}; clock {env['clock']}",
        f"- Options: {Options(**o).label()} (dtype {o['dtype']}, attention {o['attention']}, channels_last "
        f"{'on' if o['channels_last'] else 'off'}, torch.compile {'on' if o['compile'] else 'off'}, CUDA graphs "
        f"{'on' if o['cuda_graphs'] else 'off'})",
        f"- Shape: {sh['name']} -- {sh['num_frames']} frames {sh['width']}x{sh['height']}, latent {lat}; "
        f"models: {r['models']['source']} (UNet {r['models']['unet_params'] / 1e6:.1f} M parameters)",
        f"- UNet pass: batch 1 {_fmt_ms(b1['median_ms'])} (p10 {_fmt_ms(b1['p10_ms'])}, p90 {_fmt_ms(b1['p90_ms'])}, "
        f"n={b1['n']}), batch 2 {_fmt_ms(b2['median_ms'])}; FLOPs {_tf(r['flops']['unet_batch1'])} / "
        f"{_tf(r['flops']['unet_batch2'])}; achieved {r['tflops_achieved']['unet_batch1']:.3g} / "
        f"{r['tflops_achieved']['unet_batch2']:.3g} TFLOP/s",
        "- Peak memory (batch-1 pass, all models resident): "
        + (f"{r['peak_mem_bytes'] / 2**30:.2f} GiB" if r["peak_mem_bytes"] else
           f"n/a on CPU (process peak RSS {(r['peak_rss_bytes'] or 0) / 2**30:.2f} GiB)"),
        f"- Precision check: {pc['chosen_rel_l2']:.2e} relative L2 vs {pc['reference']} (tolerance "
        f"{pc['tolerance']}): {'pass' if pc['passed'] else 'FAIL'}; {len(pc['candidates'])} configuration(s) tried",
        f"- VAE decode chunk size: {r['decode_chunk_size']}",
        "",
        f"Latency of the denoising process (all UNet calls of one video), beside the paper's {GPU} figures:",
        "",
        "| Method | Steps | UNet calls x batch | Paper (s) | UNet, calls x median (s) | UNet loop (s) | "
        "End to end (s) | Paper / ours |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    measured = {m["spec"]: m for m in r["methods"]}
    done = set()
    for p in table1_rows():
        m = measured.get(p["spec"]) if p["spec"] else None
        if m is None:
            lines.append(f"| {p['name']} | {p['steps']} | — | {p['latency_s']:.2f} | — | — | — | — |")
            continue
        done.add(m["spec"])
        lines.append(_method_line(p["name"], m, p["latency_s"]))
    for m in r["methods"]:
        if m["spec"] not in done:
            lines.append(_method_line(m["spec"], m, None))
    lines += ["", "End-to-end breakdown (medians):", "",
              "| Method | Image encoder | VAE encode | UNet loop | VAE decode (frames, chunk) | Total |",
              "|---|---:|---:|---:|---:|---:|"]
    for m in r["methods"]:
        e = m["e2e"]
        lines.append(f"| {m['spec']} | {_fmt_ms(e['image_encoder_ms'])} | {_fmt_ms(e['vae_encode_ms'])} | "
                     f"{_fmt_ms(e['unet_loop_ms'])} | {_fmt_ms(e['vae_decode_ms'])} ({e['frames_decoded']}, "
                     f"{e['decode_chunk_size']}) | {_fmt_ms(e['total_ms'])} |")
    lines += ["", "Precision check candidates:", "", "| Configuration | Median batch-1 pass | Rel. L2 vs fp32 | Pass |",
              "|---|---:|---:|---|"]
    for c in pc["candidates"]:
        if c.get("error"):
            lines.append(f"| {c['label']} | — | — | not run: {c['error']} |")
        else:
            lines.append(f"| {c['label']} | {_fmt_ms(c['median_ms'])} | {c['rel_l2']:.2e} | "
                         f"{'yes' if c['passed'] else 'no'} |")
    lines += ["", "FLOPs (counted with torch.utils.flop_counter on the meta device):", "",
              "| Part | FLOPs |", "|---|---:|"]
    lines += [f"| {k} | {_tf(v)} |" for k, v in r["flops"].items()]
    return "\n".join(lines) + "\n"


def _method_line(name, m, paper_s) -> str:
    ratio = f"{paper_s * 1e3 / m['unet_ms_median']:.2f}x" if paper_s else "—"
    return (f"| {name} | {m['steps']} | {m['calls']} x {m['batch']} | "
            f"{f'{paper_s:.2f}' if paper_s else '—'} | {m['unet_ms_median'] / 1e3:.3f} | "
            f"{m['unet_loop_ms'] / 1e3:.3f} | {m['e2e']['total_ms'] / 1e3:.3f} | {ratio} |")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def default_out_dir(shape: Shape, device: str) -> Path:
    name = torch.cuda.get_device_name(torch.device(device)) if _is_cuda(device) else "cpu"
    return Path("results") / "latency" / f"{shape.name}-{_slug(name)}"


def write_results(result: dict, out_dir) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    js, md = out_dir / "latency.json", out_dir / "latency.md"
    atomic_write_json(js, result)
    atomic_write_text(md, render_markdown(result))
    return js, md


# ---------------------------------------------------------------------------------------------
# CLI
def add_arguments(p) -> None:
    """The arguments of `sfv-bench latency` (also used by ``python -m bench.latency``)."""
    p.add_argument("--shape", choices=("tiny", "paper"), default=None,
                   help="paper: 14 frames 1024x576 (latent 14x4x72x128), full-size models; tiny: the tiny stack "
                        "at 14 frames 64x64 (default: paper on CUDA, tiny on CPU)")
    p.add_argument("--stack", default=None, help="real weights: tiny | svd | svd-xt | pipeline folder "
                                                 "(default: tiny for --shape tiny, random full-size weights for paper)")
    p.add_argument("--methods", default=DEFAULT_METHODS, help="method specs (default: Table 1's)")
    p.add_argument("--device", default=None, help="cpu | cuda[:N] (default: cuda if available)")
    p.add_argument("--dtype", default="auto", help="fp32 | fp16 | bf16, a comma list to search, or auto")
    p.add_argument("--attention", default="auto", help="SDPA backend: default | math | flash | efficient | cudnn, "
                                                      "a list, or auto")
    p.add_argument("--channels-last", default="auto", help="on | off | off,on | auto")
    p.add_argument("--compile", default="auto", help="torch.compile the UNet: on | off | off,on | auto")
    p.add_argument("--cuda-graphs", default="auto", help="CUDA graphs for the UNet: on | off | off,on | auto")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help="max relative L2 error of the UNet output vs fp32 eager for a configuration to qualify")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default 20 CUDA, 5 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs before timing (default 3 CUDA, 1 CPU)")
    p.add_argument("--loop-repeats", type=int, default=3, help="timed runs of each method's whole loop")
    p.add_argument("--num-frames", type=int, default=None, help="override the shape's frames")
    p.add_argument("--height", type=int, default=None, help="override the shape's height (pixels)")
    p.add_argument("--width", type=int, default=None, help="override the shape's width (pixels)")
    p.add_argument("--decode-chunk-size", type=int, default=14, help="VAE decode chunk (frames); recorded")
    p.add_argument("--no-method-check", action="store_true",
                   help="skip generating one video with each real adapter (done when a stack is used)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder for latency.json and latency.md "
                                              "(default results/latency/<shape>-<device>)")


def _device(arg) -> str:
    if arg is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if arg.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked but torch sees no CUDA device (use --device cpu)")
    if not (arg == "cpu" or arg.startswith("cuda")):
        raise UserError(f"--device takes cpu or cuda[:N] (got {arg!r})")
    return arg


def cli_latency(args) -> int:
    """`sfv-bench latency`: write latency.json + latency.md (see the module doc for what is timed).

    JSON: schema, created, git_commit, env {device, gpu_name, driver, torch, cuda, cudnn, diffusers,
    transformers, python, cpu, threads, tf32, clock}, options {dtype, attention, channels_last,
    compile, cuda_graphs}, shape {name, num_frames, height, width, latent}, models {source,
    *_params}, timing, unet_pass {batch1, batch2[, batch1_25f, batch2_25f]: {median_ms, p10_ms,
    p90_ms, min_ms, n, frames, batch}}, components {image_encoder, vae_encode, vae_decode_<T>f},
    flops {unet_batch1, ..., vae_decode_<T>f, vae_encode, image_encoder}, tflops_achieved,
    peak_mem_bytes (batch-1 pass), peak_mem {per measurement}, peak_rss_bytes, decode_chunk_size,
    methods [{spec, name, steps, cfg, calls, batch, frames, unet_ms_median, unet_loop_ms,
    unet_loop, loop_vs_estimate, unet_flops, e2e_flops, e2e {image_encoder_ms, vae_encode_ms,
    unet_loop_ms, vae_decode_ms, decode_chunk_size, frames_decoded, total_ms}, paper, method_run}],
    precision_check {reference, metric, tolerance, search, candidates, chosen, chosen_rel_l2, passed}.
    """
    device = _device(getattr(args, "device", None))
    if getattr(args, "threads", None):
        torch.set_num_threads(int(args.threads))
    cuda = _is_cuda(device)
    shape = make_shape(args.shape or ("paper" if cuda else "tiny"), args.num_frames, args.height, args.width)
    for name in ("repeats", "warmup", "loop_repeats"):
        v = getattr(args, name, None)
        if v is not None and v < (1 if name != "warmup" else 0):
            raise UserError(f"--{name.replace('_', '-')} must be >= {1 if name != 'warmup' else 0} (got {v})")
    if args.tolerance is not None and not args.tolerance > 0:
        raise UserError(f"--tolerance must be > 0 (got {args.tolerance})")
    s = Settings(
        shape=shape, device=device, stack=args.stack, methods=args.methods,
        option_values={k: getattr(args, k, "auto") for k in OPTION_ORDER},
        tolerance=args.tolerance, warmup=args.warmup if args.warmup is not None else (3 if cuda else 1),
        repeats=args.repeats or (20 if cuda else 5), loop_repeats=args.loop_repeats or 3,
        decode_chunk_size=args.decode_chunk_size, method_check=not args.no_method_check, seed=args.seed)
    if s.decode_chunk_size is not None and s.decode_chunk_size < 1:
        raise UserError(f"--decode-chunk-size must be >= 1 (got {s.decode_chunk_size})")
    result = run_benchmark(s)
    js, md = write_results(result, args.out or default_out_dir(shape, device))
    print(f"wrote {js} and {md}")
    return 0 if result["precision_check"]["passed"] else 1


def main(argv=None) -> int:
    from .cli import run_standalone
    return run_standalone("sfv-bench latency", __doc__.split("\n")[0], add_arguments, cli_latency, argv)


if __name__ == "__main__":
    raise SystemExit(main())
