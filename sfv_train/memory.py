"""`sfv-train --estimate-memory`: the per-GPU peak of a training run, without a GPU and without weights.

How: the run's own code executes on fake tensors (``torch._subclasses.FakeTensorMode``: shapes,
dtypes and storages, no data, nothing allocated), as torchtitan's memory estimator does, while
:class:`LiveBytes` (a ``TorchDispatchMode``) counts the bytes of every live tensor storage and
remembers the peak and what made it up. The models are the stack's real configurations
(``methods.models.configs``: the full-size SVD UNet, VAE and CLIP for ``--stack svd``) with random
initialisation; the trainer's ``build_models``, ``g_phase`` and ``d_phase`` (``sfv_train.trainer``)
run unchanged at the run's resolution, frames, batch, precision and checkpointing. What it counts is
what ``torch.cuda.max_memory_allocated`` counts: the bytes of live tensors.

What it does not see, covered by a stated margin (:data:`MARGIN_FRACTION` of the peak + :data:`MARGIN_GIB`):
the caching allocator's fragmentation and rounding, the CUDA context and kernels, cuBLAS/cuDNN
workspaces, NCCL's communication buffers. Two approximations: the fake run is on CPU, so attention
takes the CPU's fused kernel where a GPU takes flash / memory-efficient attention (both keep the
output and its log-sum-exp for backward; ``--r1 exact`` forces the math kernel on both), and autocast
follows CPU's op lists. Gradient accumulation: micro-batch 2 holds the gradients of micro-batch 1
while it runs, micro-batches 3.. repeat it, so two are run. More than one process: DDP's gradient
buckets (a copy of G's gradients) are added.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import weakref
from collections import defaultdict
from pathlib import Path
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from sfv_core.errors import UserError

GiB = 1024 ** 3
MARGIN_FRACTION = 0.10      # the caching allocator's fragmentation and rounding
MARGIN_GIB = 2.0            # CUDA context, kernels, cuBLAS / cuDNN workspaces, NCCL buffers
R1_VARIANTS = ("none", "approx", "exact")
# usable GiB of the cards people train on (nvidia-smi's totals): A100 40 GB; H100 80 GB (A100 80 GB: 80);
# H200 141 GB
CARDS = {"40 GB": 40.0, "80 GB": 79.6, "141 GB": 140.4}
FORWARD, BACKWARD = "activations (forward)", "activations (backward)"
_ITEM = torch.ops.aten._local_scalar_dense.default


class LiveBytes(TorchDispatchMode):
    """Bytes of live tensor storages created under it, by label, and the peak with its make-up.

    A storage is labelled when it is created: the innermost ``scope`` label, else activations
    (backward) inside an autograd backward, else activations (forward); ``relabel`` moves one
    (parameters, gradients). ``fake``: the tensors are fake (``.item()`` answers a placeholder, so
    code that logs numbers runs through, and ops that only write values in place are skipped)."""

    def __init__(self, fake: bool = True):
        super().__init__()
        self.fake = fake
        self.live: dict[int, list] = {}             # id(storage) -> [bytes, label]
        self.by_label: dict[str, int] = defaultdict(int)
        self.total = self.peak = 0
        self.at_peak: dict[str, int] = {}
        self._scopes: list[str] = []

    @contextlib.contextmanager
    def scope(self, label: str):
        self._scopes.append(label)
        try:
            yield
        finally:
            self._scopes.pop()

    def _label(self) -> str:
        if self._scopes:
            return self._scopes[-1]
        return BACKWARD if torch._C._current_graph_task_id() != -1 else FORWARD

    def _free(self, key: int) -> None:
        nbytes, label = self.live.pop(key, (0, None))
        if label is not None:
            self.total -= nbytes
            self.by_label[label] -= nbytes

    def track(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        key = id(st)
        if key in self.live:
            return
        nbytes, label = st.nbytes(), self._label()
        self.live[key] = [nbytes, label]
        weakref.finalize(st, self._free, key)
        self.total += nbytes
        self.by_label[label] += nbytes
        if self.total > self.peak:
            self.peak, self.at_peak = self.total, dict(self.by_label)

    def relabel(self, t: torch.Tensor, label: str) -> None:
        entry = self.live.get(id(t.untyped_storage()))
        if entry is not None and entry[1] != label:
            self.by_label[entry[1]] -= entry[0]
            self.by_label[label] += entry[0]
            entry[1] = label

    def reset_peak(self) -> None:
        self.peak, self.at_peak = self.total, dict(self.by_label)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.fake and func is _ITEM:         # fake tensors hold no values: a placeholder
            return True if args[0].dtype == torch.bool else (1.0 if args[0].is_floating_point() else 0)
        if self.fake and _in_place(func):       # writes values only: nothing to allocate, nothing to do
            return args[0]
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out


# In-place ops that change a tensor's shape, strides or storage (the others only write values).
_RESHAPING = {"resize_", "resize_as_", "set_", "as_strided_", "squeeze_", "unsqueeze_", "transpose_", "t_",
              "swapdims_", "swapaxes_", "detach_", "_resize_output_"}


def _in_place(func) -> bool:
    """An aten op that writes its first argument's values in place and returns it (add_, uniform_, ...)."""
    name = func._schema.name.split("::")[-1]
    if not name.endswith("_") or name.startswith("_") or name in _RESHAPING or not func._schema.arguments:
        return False
    first, returns = func._schema.arguments[0], func._schema.returns
    return (first.alias_info is not None and first.alias_info.is_write and len(returns) == 1
            and returns[0].alias_info is not None and returns[0].alias_info.is_write)


class _Accelerator:
    """What the trainer asks of accelerate's Accelerator in one process."""

    is_main_process = True

    def prepare_model(self, model):
        return model

    def unwrap_model(self, model):
        return model

    def no_sync(self, model):
        return contextlib.nullcontext()

    def backward(self, tensor, **kw):
        tensor.backward(**kw)

    def wait_for_everyone(self):
        pass


class _Batches:
    """Zero latents and conditions of the run's shapes (``LatentDataset.batch``'s keys)."""

    def __init__(self, cfg, configs: dict, n: int = 1000):
        f = 2 ** (len(configs["vae"]["block_out_channels"]) - 1)
        c = configs["unet"]["out_channels"]
        self.latent = (cfg.num_frames, c, cfg.height // f, cfg.width // f)
        self.embed = configs["unet"]["cross_attention_dim"]
        self.n = n

    def __len__(self) -> int:
        return self.n

    def batch(self, indices, device) -> dict:
        b = len(indices)
        return {"latents": torch.zeros(b, *self.latent), "cond_latent": torch.zeros(b, *self.latent[1:]),
                "image_embeds": torch.zeros(b, 1, self.embed), "added_time_ids": torch.zeros(b, 3)}


def stack_configs(stack: str) -> dict:
    """The model configurations of ``--stack``: svd / svd-xt (the full-size SVD architecture), tiny,
    mini, or a pipeline folder holding unet/, vae/ and image_encoder/ config.json (weights not read)."""
    from methods.models.configs import FULL_CONFIGS, FULL_XT_CONFIGS, MINI_CONFIGS, TINY_CONFIGS

    known = {"svd": FULL_CONFIGS, "svd-xt": FULL_XT_CONFIGS, "tiny": TINY_CONFIGS, "mini": MINI_CONFIGS}
    if stack in known:
        return known[stack]
    folder = Path(stack).expanduser()
    try:
        return {k: json.loads((folder / k / "config.json").read_text()) for k in ("unet", "vae", "image_encoder")}
    except (OSError, ValueError) as e:
        raise UserError(f"--estimate-memory needs the stack's configurations: --stack svd, svd-xt, tiny, mini or a "
                        f"pipeline folder with unet/, vae/, image_encoder/ config.json ({e})") from e


@dataclasses.dataclass(kw_only=True)
class Estimate:
    """Bytes: resident parts after setup, the G phase's peak make-up, and each R1 variant's D-phase peak."""

    cfg: object
    target: str                       # "cuda" or "cpu": the device the run is estimated for
    bf16: bool
    accum_run: int                    # micro-batches executed (see the module doc)
    resident: dict
    g_peak: int
    g_at_peak: dict
    d_peaks: dict                     # r1 variant -> (peak bytes, make-up at the peak)
    ddp_buckets: int                  # added with more than one process

    def d_variant(self, r1: str | None = None) -> str:
        r1 = r1 or self.cfg.r1
        off = self.cfg.r1_gamma <= 0 or r1 == "none"
        return "none" if off else ("exact" if r1 in ("exact", "lazy") else "approx")

    def peak(self, r1: str | None = None, processes: int = 1) -> int:
        """Peak live bytes of a step with ``r1`` (default the run's; lazy: its R1 steps), per process."""
        extra = self.ddp_buckets if processes > 1 else 0
        return max(self.g_peak, self.d_peaks[self.d_variant(r1)][0]) + extra

    @staticmethod
    def planned(peak: int) -> float:
        """GiB to plan for: the peak plus the margin for what the count cannot see."""
        return peak / GiB * (1 + MARGIN_FRACTION) + MARGIN_GIB

    def fits(self, gib: float, r1: str | None = None, processes: int = 2) -> bool:
        return self.planned(self.peak(r1, processes)) <= gib


def estimate(cfg, **kw) -> Estimate:
    """The memory of one optimisation step of ``cfg`` (a TrainConfig; --data and --out may be empty),
    counted on fake tensors: nothing is allocated. Keywords: those of :func:`count_step`."""
    return count_step(cfg, fake=True, **kw)


def measure(cfg, **kw) -> Estimate:
    """The same step on real tensors (random weights, zero data), its live bytes counted as it runs:
    what :func:`estimate` is checked against where the step fits (tests, benchmarks/bench_memory.py)."""
    return count_step(cfg, fake=False, **kw)


def count_step(cfg, fake: bool = True, target: str | None = None, r1_variants=R1_VARIANTS,
               param_dtype: torch.dtype = torch.float32) -> Estimate:
    """Build the trainer's models and run its G phase and one D phase per R1 variant under
    :class:`LiveBytes`. ``target``: cuda (default unless --device cpu) decides what --mixed-precision
    auto means; ``param_dtype``: the weights' dtype (the trainer loads float32)."""
    from .data import sample_indices
    from .train import trainer_class

    cfg = dataclasses.replace(cfg, data=cfg.data or "-", out=cfg.out or "-", resume="")
    configs = stack_configs(cfg.stack)
    target = target or ("cpu" if cfg.device == "cpu" else "cuda")
    if cfg.method == "lcm":
        raise UserError("--estimate-memory covers --method sfv, ufogen and ladd; lcm (student, target network, "
                        "teacher, AdamW) is not estimated yet")
    trainer = trainer_class(cfg.method)(cfg)
    rcfg = trainer.cfg
    r1, accum = rcfg.r1, rcfg.grad_accum
    bf16 = rcfg.mixed_precision == "bf16" or (rcfg.mixed_precision == "auto" and target == "cuda")
    rcfg.grad_accum = accum_run = min(accum, 2)
    data = _Batches(rcfg, configs)
    for a in range(accum_run):          # the data order's permutation, made outside the fake mode
        sample_indices(len(data), rcfg.seed, 0, a, accum_run, rcfg.batch_size, 0, 1)
    tracker = LiveBytes(fake)
    with _fake_tensors() if fake else contextlib.nullcontext(), tracker:
        keep = _build(trainer, tracker, configs, rcfg, bf16, data, param_dtype)
        resident = {k: v for k, v in tracker.by_label.items() if v}
        (g_peak, g_at), d_peaks = _phase_peaks(trainer, tracker, r1_variants)
        del keep
    rcfg.r1, rcfg.grad_accum = r1, accum
    trained_bytes = sum(p.numel() * p.element_size() for p in trainer.G.parameters() if p.requires_grad)
    return Estimate(cfg=rcfg, target=target, bf16=bf16, accum_run=accum_run, resident=resident, g_peak=g_peak,
                    g_at_peak=g_at, d_peaks=d_peaks, ddp_buckets=trained_bytes)   # DDP: a copy of the gradients


@contextlib.contextmanager
def _fake_tensors():
    """Fake tensors (shapes and dtypes, no memory) and the patches the trainer needs under them."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with contextlib.ExitStack() as stack:
        stack.enter_context(FakeTensorMode(allow_non_fake_inputs=True))
        stack.enter_context(_fake_deepcopy())
        # d_stats (the D-phase probes: boolean-mask means of logits) has data-dependent shapes,
        # and fake tensors hold no data: its few bytes of logging are left out
        stack.enter_context(mock.patch("sfv_train.trainer.d_stats", lambda *a, **k: {}))
        # Module.to swaps fake parameters for new ones, which the fake mode's weak references forbid;
        # on the fake run's one device the move is nothing
        stack.enter_context(mock.patch("sfv_train.disc.Discriminator.to", lambda self, *a, **k: self))
        yield


def _phase_peaks(trainer, tracker: LiveBytes, r1_variants) -> tuple[tuple, dict]:
    """((peak, make-up at the peak) of the G phase, {r1 variant: the same of the D phase})."""
    tracker.reset_peak()
    metrics = defaultdict(float)
    stash = trainer.g_phase(metrics)
    g_peak = (tracker.peak, tracker.at_peak)
    d_peaks = {}
    for variant in r1_variants:
        trainer.cfg.r1 = variant
        tracker.reset_peak()
        trainer.d_phase(stash, metrics)
        d_peaks[variant] = (tracker.peak, tracker.at_peak)
    return g_peak, d_peaks


def _build(trainer, tracker: LiveBytes, configs: dict, cfg, bf16: bool, data, param_dtype) -> list:
    """The trainer's models (fake or real tensors), labelled, with the optimisers' state made (as from
    step 2 on) and gradients relabelled as they accumulate; returns what must stay alive (VAE, CLIP)."""
    keep = []
    with tracker.scope("VAE and CLIP image encoder"):
        default = torch.get_default_dtype()
        torch.set_default_dtype(param_dtype)
        try:
            parts = _models(configs, fake=tracker.fake)
        finally:
            torch.set_default_dtype(default)
        keep.append(parts["vae"])                 # kept for previews
        if cfg.fvd_every > 0:                     # kept for the FVD while training
            keep.append(parts["image_encoder"])
    unet = parts.pop("unet")
    trainer.acc, trainer.device, trainer.bf16 = _Accelerator(), torch.device("cpu"), bf16
    trainer.rank, trainer.world, trainer.step = 0, 1, 0
    trainer.gen = torch.Generator().manual_seed(cfg.seed)
    trainer.data = data
    trainer.build_models(unet)
    _label_models(trainer, tracker)
    for opt in _optimizers(trainer):
        with tracker.scope("optimiser state"):
            for group in opt.param_groups:
                for p in group["params"]:
                    p.grad = torch.zeros_like(p)
            opt.step()
        opt.zero_grad(set_to_none=True)
        for group in opt.param_groups:
            for p in group["params"]:
                p.register_post_accumulate_grad_hook(lambda q: tracker.relabel(q.grad, "gradients"))
        opt.step = lambda *a, **k: None     # its state exists now; a step's temporaries are per parameter
    return keep


def _models(configs: dict, fake: bool) -> dict:
    """Random-init UNet, VAE and CLIP image encoder from their configurations (as
    ``methods.models.configs.build_models`` makes them). ``fake``: the few tensors made by the legacy
    ``torch.Tensor([...])`` constructor, which bypasses the fake mode, are replaced by fake ones."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    models = {"unet": UNetSpatioTemporalConditionModel.from_config(configs["unet"]),
              "vae": AutoencoderKLTemporalDecoder.from_config(configs["vae"]),
              "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(**configs["image_encoder"]))}
    from torch._subclasses.fake_tensor import FakeTensor

    modules = [m for model in models.values() for m in model.modules()] if fake else []
    for module in modules:
        for table in (module._parameters, module._buffers):
            for name, t in table.items():
                if t is not None and not isinstance(t, FakeTensor):      # made outside the fake mode
                    new = torch.empty_like(t)
                    table[name] = torch.nn.Parameter(new, t.requires_grad) if table is module._parameters else new
    return {k: m.eval().requires_grad_(False) for k, m in models.items()}


@contextlib.contextmanager
def _fake_deepcopy():
    """``copy.deepcopy`` of modules holding fake tensors (the EMA, D's encoder copy): a clone under the
    fake mode (torch's own ``Tensor.__deepcopy__`` re-attaches a storage copy, which fake tensors refuse)."""
    from torch._subclasses.fake_tensor import FakeTensor

    def deepcopy(self, memo):
        if id(self) not in memo:
            with torch.no_grad():
                new = self.clone()
            memo[id(self)] = (torch.nn.Parameter(new, self.requires_grad) if isinstance(self, torch.nn.Parameter)
                              else new.requires_grad_(self.requires_grad))
        return memo[id(self)]

    old = FakeTensor.__dict__.get("__deepcopy__")
    FakeTensor.__deepcopy__ = deepcopy
    try:
        yield
    finally:
        if old is None:
            del FakeTensor.__deepcopy__
        else:
            FakeTensor.__deepcopy__ = old


def _optimizers(trainer) -> list:
    return [o for o in (getattr(trainer, "opt_g", None), getattr(trainer, "opt_d", None)) if o is not None]


def _label_models(trainer, tracker: LiveBytes) -> None:
    named = [("generator weights", getattr(trainer, "G", None)), ("EMA", getattr(trainer, "ema", None)),
             ("teacher", getattr(trainer, "teacher", None))]
    disc = getattr(trainer, "D", None)
    if disc is not None:
        named += [("D frozen encoder", disc.backbone)]
    for label, module in named:
        if module is not None:
            for t in list(module.parameters()) + list(module.buffers()):
                tracker.relabel(t, label)
    if disc is not None:
        for t in disc.head_parameters() + [b for m in (disc.spatial, disc.temporal) for b in m.buffers()]:
            tracker.relabel(t, "D heads")
