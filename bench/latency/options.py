"""Inference options of the UNet (dtype, SDPA backend, channels_last, torch.compile, CUDA graphs), the
UNet with options applied, and the greedy search that keeps the fastest configuration whose output is
within ``tolerance`` (relative L2) of fp32 eager (see the package doc)."""
from __future__ import annotations

import contextlib
import copy
import gc
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from methods.models.timing import cuda_device, is_cuda, sync, time_ms
from sfv_core.env import tf32_disabled
from sfv_core.errors import UserError
from sfv_core.values import parse_bool

from . import DEFAULT_TOLERANCE

log = logging.getLogger(__name__)

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
                out.append(parse_bool(item, f"--{name.replace('_', '-')}"))
        if not out:
            raise UserError(f"--{name.replace('_', '-')} is empty")
        if name == "cuda_graphs" and True in out and kind != "cuda":
            raise UserError("--cuda-graphs on needs a CUDA device (use --device cuda or --cuda-graphs off)")
        space[name] = list(dict.fromkeys(out))
    return space

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
    (``methods.models.edm.Denoiser`` consumes it before the next call).
    """

    def __init__(self, unet_fp32, opts: Options, device, reset_dynamo: bool = True):
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
            # per input shape, which would otherwise pile up against the recompile limit. Not while
            # another compiled runner is still to be used (reset_dynamo=False): it would compile again.
            if reset_dynamo:
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
        with cuda_device(self.device):     # graph capture, its side stream and the replay on our GPU
            if self.opts.cuda_graphs and not self.opts.compile:
                return self._graphed(args, kwargs)
            return self._eager(*args, **kwargs)

    def run(self, inputs: dict) -> torch.Tensor:
        return self(inputs["sample"], inputs["timestep"], encoder_hidden_states=inputs["encoder_hidden_states"],
                    added_time_ids=inputs["added_time_ids"], return_dict=False)[0]


def rel_l2(y, ref) -> float:
    y, ref = y.detach().double().cpu(), ref.detach().double().cpu()
    return float((y - ref).norm() / ref.norm().clamp_min(1e-30))


def cast_inputs(inputs: dict, dtype) -> dict:
    return {k: (v if k == "timestep" else v.to(dtype)) for k, v in inputs.items()}


def _measure(unet_fp32, opts: Options, device, inputs_fp32: dict, ref: torch.Tensor, *, tolerance: float,
             warmup: int, repeats: int, reset_dynamo: bool):
    """(record, runner) of one candidate: its median time and its relative L2 error against ``ref``; runner None
    when the candidate does not run here (the record then holds the error)."""
    rec = {"options": opts.to_dict(), "label": opts.label()}
    try:
        runner = UNetRunner(unet_fp32, opts, device, reset_dynamo=reset_dynamo)
        inputs = cast_inputs(inputs_fp32, runner.dtype)
        ms = time_ms(lambda: runner.run(inputs), device, warmup, repeats)
        out = runner.run(inputs).float().clone()
        sync(device)
        err = rel_l2(out, ref)
        rec.update(rel_l2=err, passed=bool(math.isfinite(err) and err <= tolerance),
                   median_ms=float(np.median(ms)), n=len(ms))
        return rec, runner
    except Exception as e:  # a backend that does not apply here (no triton, no flash kernel ...)
        rec.update(rel_l2=None, passed=False, median_ms=None,
                   error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return rec, None


def _candidate_line(rec: dict) -> str:
    if rec.get("error") is not None:
        return f"  candidate {rec['label']}: {rec['error']}"
    return (f"  candidate {rec['label']}: {rec['median_ms']:.2f} ms, rel L2 {rec['rel_l2']:.2e} "
            f"({'pass' if rec['passed'] else 'FAIL'})")


def search_options(unet_fp32, space: dict, inputs_fp32: dict, device, *, tolerance: float, warmup: int,
                   repeats: int, keep: dict | None = None) -> tuple[Options, dict]:
    """Greedy search over ``space`` (see module doc). Returns (chosen Options, precision_check dict).

    ``keep``: a dict that receives ``keep["runner"]``, the chosen configuration's runner as the search built
    and timed it, so a compiled UNet is compiled once (a new runner would reset dynamo and compile again).
    Only the best passing runner so far stays alive beside the one being measured."""
    with tf32_disabled():  # TF32 off for the fp32 reference (cuDNN uses TF32 by default on Ampere+)
        ref = UNetRunner(unet_fp32, Options(), device).run(inputs_fp32).float().clone()
        sync(device)
    if not torch.isfinite(ref).all():
        raise UserError("the fp32 reference UNet output holds NaN/inf: broken weights?")
    results: dict = {}
    best: dict = {}                       # {"opts", "ms", "runner"}: the fastest passing runner so far

    def evaluate(opts: Options) -> dict:
        if opts in results:
            return results[opts]
        kept = best.get("runner")
        rec, runner = _measure(unet_fp32, opts, device, inputs_fp32, ref, tolerance=tolerance, warmup=warmup,
                               repeats=repeats, reset_dynamo=not (kept and kept.opts.compile))
        if keep is not None and rec["passed"] and rec["median_ms"] < best.get("ms", math.inf):
            best.update(opts=opts, ms=rec["median_ms"], runner=runner)
        runner = kept = None
        gc.collect()
        if is_cuda(device):
            with cuda_device(device):
                torch.cuda.empty_cache()
        log.info(_candidate_line(rec))
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
    if keep is not None:
        keep["runner"] = best.get("runner") if best.get("opts") == current else None
    best.clear()
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
