"""Method registry: names -> adapters, spec parsing, listing. Imports no torch and no adapter module.

A method spec on the command line is ``name[:steps]``, comma separated:
``svd:25,svd:16,animatelcm:4,sfv:1``. A name without steps gets its default (svd 25,
animatelcm 4, the one-step family 1). Options are ``name.key=value`` (``parse_method_options``).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from sfv_core.errors import UserError
from sfv_core.values import parse_bool


@dataclass(frozen=True)
class Option:
    default: object
    help: str


# A step count past this is a typo, not a sampler setting (SVD's default is 25; Table 1 goes to 25): refused
# before hours of generation start.
MAX_STEPS = 1000


@dataclass(frozen=True, kw_only=True)
class MethodInfo:
    """Everything known of a method before its adapter is imported; the adapter reads its facts here
    (``Method.info``)."""
    target: str                        # "module:Class", imported only by get_method
    description: str
    valid_steps: tuple | None          # None: any integer >= 1; (0,): a reference row without steps
    default_steps: int
    default_stack: str
    cfg: bool | Callable[[dict], bool] = False   # batch-2 classifier-free guidance: fixed, or a rule over the options
    unet_required: bool = False        # off the tiny stack, the user must name a UNet checkpoint (option ``unet``)
    options: dict = field(default_factory=dict)   # name -> Option
    spec_parser: str = ""              # "module:function" parsing this method's own spec syntax (item -> MethodSpec)

    def steps_text(self) -> str:
        return f"any >= 1 (up to {MAX_STEPS})" if self.valid_steps is None else ", ".join(map(str, self.valid_steps))

    def option_defaults(self) -> dict:
        return {k: o.default for k, o in self.options.items()}

    def uses_cfg(self, options: dict | None = None) -> bool:
        """Whether a run with ``options`` (unset ones at their defaults) makes batch-2 CFG calls."""
        if callable(self.cfg):
            return bool(self.cfg({**self.option_defaults(), **(options or {})}))
        return self.cfg


def _guided(options: dict) -> bool:
    """svd: CFG runs unless the last frame's scale is <= 1."""
    return float(options["max_guidance"]) > 1


def _i2v_guided(options: dict) -> bool:
    """Before the pipeline is read: guided unless a guidance of 1 or less is asked (the image-to-video pipelines'
    own defaults guide); the adapter decides from the pipeline's class once checked."""
    guidance = options.get("guidance")
    try:
        return guidance in (None, "") or float(guidance) > 1.0
    except ValueError:
        return True


def _pretends_cfg(options: dict) -> bool:
    """dummy: batch 2 is reported as CFG."""
    return int(options["batch"]) == 2


_UNET_ONESTEP = Option(None, "UNet: a diffusers UNet folder written by `sfv-train` (or with a unet/ "
                             "subfolder), a .safetensors state dict, or a repo id in the HF cache; "
                             "default: the stack's own UNet")
_SIGMA = Option(700.0, "the single step's noise level (sigma_max of SVD's schedule)")


def _onestep_family(label: str) -> MethodInfo:
    return MethodInfo(
        target="methods.onestep:OneStepMethod",
        description=f"{label}: one EDM step from sigma 700 with a UNet checkpoint from `sfv-train` "
                    f"(required, except on the tiny stack where the stack's UNet stands in)",
        valid_steps=(1,), default_steps=1, default_stack="svd", unet_required=True,
        options={"unet": Option(None, f"{label} UNet checkpoint folder (from `sfv-train`) -- required"),
                         "sigma": _SIGMA},
    )


METHODS: dict[str, MethodInfo] = {
    "svd": MethodInfo(
        target="methods.svd:SVDMethod",
        description="Stable Video Diffusion, N Euler steps (Karras sigmas 700..0.002), frame-wise CFG 1.0 -> 3.0 "
                    "(cond + uncond in one batch-2 UNet call); equals diffusers' StableVideoDiffusionPipeline",
        valid_steps=None, default_steps=25, default_stack="svd", cfg=_guided,
        options={"min_guidance": Option(1.0, "CFG scale of the first frame"),
                 "max_guidance": Option(3.0, "CFG scale of the last frame (<= 1 turns CFG off)"),
                 "unet": Option(None, "replace the stack's UNet (folder, .safetensors or repo id)")},
    ),
    "animatelcm": MethodInfo(
        target="methods.animatelcm:AnimateLCMMethod",
        description="AnimateLCM-SVD-xt 1.1 with its own consistency sampler (40 Karras levels, no CFG); generates "
                    "gen_frames frames, decodes them all in chunks of 8 and returns the first num_frames (the paper's "
                    "AnimateLCM*, as the official batch script does)",
        valid_steps=(1, 2, 4, 8), default_steps=4, default_stack="svd-xt",
        options={"unet": Option("wangfuyun/AnimateLCM-SVD-xt", "AnimateLCM UNet: repo id in the HF cache, folder or "
                                ".safetensors state dict (on the tiny stack the stack's UNet stands in unless set)"),
                 "weights_name": Option("AnimateLCM-SVD-xt-1.1.safetensors", "state-dict file inside the repo/folder: "
                                        "the paper's xt-1.1 (what the official app.py loads); "
                                        "AnimateLCM-SVD-xt.safetensors is the 1.0 release"),
                 "gen_frames": Option(25, "frames generated (the released model is 25-frame SVD-xt); the first "
                                          "num_frames are returned; 0 = num_frames"),
                 "decode_chunk_size": Option(8, "with decode_frames=all: frames the temporal VAE decodes together "
                                                "(the official batch_inference.py: 8); 0 = the protocol's"),
                 "decode_frames": Option("all", "all: decode every generated frame, then keep the first num_frames "
                                                "(the reference); kept: decode only the first num_frames latents, "
                                                "in chunks of the protocol's decode_chunk_size")},
    ),
    "lcm": MethodInfo(
        target="methods.animatelcm:AnimateLCMMethod",
        description="AnimateLCM trained here: a UNet consistency-distilled by `sfv-train --method lcm`, sampled with "
                    "AnimateLCM's sampler at the protocol's frame count (the paper's 'AnimateLCM' rows)",
        valid_steps=(1, 2, 4, 8), default_steps=4, default_stack="svd", unet_required=True,
        options={"unet": Option(None, "UNet folder exported by `sfv-train --method lcm` -- required"),
                 "weights_name": Option(None, "state-dict file when the UNet source holds several"),
                 "gen_frames": Option(0, "frames generated; 0 = num_frames"),
                 "decode_chunk_size": Option(0, "with decode_frames=all: frames decoded together; 0 = the protocol's"),
                 "decode_frames": Option("kept", "kept: decode the generated frames with the protocol's chunk; all: "
                                                 "with decode_chunk_size")},
    ),
    "onestep": MethodInfo(
        target="methods.onestep:OneStepMethod",
        description="one EDM step from sigma 700 (x = 700 * noise, output D(x; 700)) with any UNet",
        valid_steps=(1,), default_steps=1, default_stack="svd", options={"unet": _UNET_ONESTEP, "sigma": _SIGMA},
    ),
    "sfv": _onestep_family("SF-V"),
    "ufogen": _onestep_family("UFOGen"),
    "ladd": _onestep_family("LADD"),
    "static": MethodInfo(
        target="methods.static:StaticMethod",
        description="reference row: the conditioning frame repeated (a model that learned no motion); no UNet",
        valid_steps=(0,), default_steps=0, default_stack="none",
    ),
    "real": MethodInfo(
        target="",
        description="reference row: held-out real clips of the same classes, not the scored ones (the FVD floor "
                    "at this N); made by `sfv-bench run` itself, no model",
        valid_steps=(0,), default_steps=0, default_stack="none",
    ),
    "i2v": MethodInfo(
        target="methods.i2v:I2VMethod",
        description="any diffusers image-to-video pipeline (Wan, LTX-Video, CogVideoX, ...) from a folder or the "
                    "offline HF cache: i2v:SOURCE[:STEPS][:KEY=VALUE...]; the pipeline's own __call__ per video, "
                    "then the protocol's frames (docs/i2v.md)",
        valid_steps=None, default_steps=50, default_stack="none", cfg=_i2v_guided,
        spec_parser="methods.i2v_spec:parse_i2v_spec",
        options={
            "pipeline": Option(None, "pipeline folder (model_index.json) or repo id in the HF cache; the spec's "
                                     "SOURCE sets it"),
            "transformer": Option(None, "replace the pipeline's transformer: a save_pretrained folder (or one with "
                                        "a transformer/ subfolder), e.g. a distilled student"),
            "lora": Option(None, "LoRA weights (file or folder) loaded with load_lora_weights and fused (needs peft)"),
            "lora_scale": Option(1.0, "scale of the fused LoRA"),
            "guidance": Option(None, "guidance_scale; default: the pipeline's own (CFG when > 1)"),
            "height": Option(0, "generation height; 0 = the pipeline's native"),
            "width": Option(0, "generation width; 0 = the pipeline's native"),
            "frames": Option(0, "frames generated; 0 = the pipeline's native count"),
            "fps": Option(0, "the model's frame rate (Wan 16, LTX 24, CogVideoX 8 when 0); LTX also gets it as "
                             "frame_rate when set"),
            "frame_rule": Option("time", "which native frames are scored: time (the nearest to k / 7 s) or first"),
            "prompt": Option("a video of {words}", "prompt template: {label} = UCF-101 class (ApplyEyeMakeup), "
                                                   "{words} = its words (apply eye makeup)"),
            "negative_prompt": Option("", "negative prompt; empty = the pipeline's own"),
            "max_sequence_length": Option(0, "text tokens; 0 = the pipeline's own"),
        },
    ),
    "dummy": MethodInfo(
        target="methods.dummy:DummyMethod",
        description="cheap deterministic fake (the image drifting by a seeded offset per frame); no models",
        valid_steps=None, default_steps=1, default_stack="none", cfg=_pretends_cfg,
        options={"batch": Option(1, "UNet batch per video to report (2 pretends CFG)"),
                 "nan": Option(False, "produce NaN videos (tests the harness's NonFiniteOutput path)")},
    ),
}


@dataclass(frozen=True)
class MethodSpec:
    name: str
    steps: int
    key: str  # "name:steps", unique within a run
    options: tuple = ()  # (key, value) pairs the spec itself sets (i2v:SOURCE:STEPS:KEY=VALUE)


def _valid_names() -> str:
    return ", ".join(sorted(METHODS))


def parse_spec(item: str) -> MethodSpec:
    """One ``name[:steps]`` spec -> MethodSpec, or a UserError listing what is valid."""
    item = item.strip()
    name, sep, steps_text = item.partition(":")
    name = name.strip().lower()
    if name not in METHODS:
        raise UserError(f"unknown method {name!r} in {item!r}; valid methods: {_valid_names()}")
    info = METHODS[name]
    if info.spec_parser:
        module, func = info.spec_parser.split(":")
        return getattr(importlib.import_module(module), func)(item, name)
    if not sep:
        steps = info.default_steps
    else:
        try:
            steps = int(steps_text.strip())
        except ValueError:
            steps = None
        if steps is None or steps < (0 if info.valid_steps == (0,) else 1):
            raise UserError(f"bad step count {steps_text.strip()!r} in {item!r}: {name} takes "
                            f"{info.steps_text()} steps")
    if info.valid_steps is None and steps > MAX_STEPS:
        raise UserError(f"{item!r}: {steps} steps is past the bound of {MAX_STEPS} (SVD's default is 25); "
                        f"pass a step count from 1 to {MAX_STEPS}")
    if info.valid_steps is not None and steps not in info.valid_steps:
        raise UserError(f"{name} cannot run {steps} steps ({item!r}); valid steps for {name}: {info.steps_text()}")
    return MethodSpec(name, steps, name if info.valid_steps == (0,) else f"{name}:{steps}")


def parse_specs(text: str) -> list[MethodSpec]:
    """'svd:25,svd:16,animatelcm:4,sfv:1' -> [MethodSpec, ...] (duplicates are an error)."""
    items = [s for s in (text or "").split(",") if s.strip()]
    if not items:
        raise UserError(f"no method given; valid methods: {_valid_names()} (e.g. svd:25,animatelcm:4,sfv:1)")
    specs, seen = [], set()
    for item in items:
        spec = parse_spec(item)
        if spec.key in seen:
            raise UserError(f"method {spec.key} is listed twice")
        seen.add(spec.key)
        specs.append(spec)
    return specs


def _convert(value, default, where: str):
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        return value
    if isinstance(default, bool):
        return parse_bool(value, f"option {where}")
    try:
        return type(default)(value)
    except ValueError:
        raise UserError(f"option {where}: {value!r} is not a valid {type(default).__name__}") from None


def check_options(name: str, options: dict) -> dict:
    """Validate option names for method ``name`` and convert string values to the default's type."""
    info = METHODS[name]
    out = {}
    for key, value in options.items():
        if key not in info.options:
            valid = ", ".join(sorted(info.options)) or "none"
            raise UserError(f"unknown option {key!r} for method {name}; valid options: {valid}")
        out[key] = _convert(value, info.options[key].default, f"{name}.{key}")
    return out


def parse_method_options(items) -> dict[str, dict]:
    """['sfv.unet=/ckpt', 'svd.max_guidance=2.5'] -> {'sfv': {'unet': '/ckpt'}, 'svd': {'max_guidance': 2.5}}."""
    out: dict[str, dict] = {}
    for item in items or []:
        left, eq, value = item.partition("=")
        name, dot, key = left.strip().partition(".")
        if not eq or not dot or not key:
            raise UserError(f"bad method option {item!r}: expected NAME.KEY=VALUE (e.g. sfv.unet=/path/ckpt)")
        if name not in METHODS:
            raise UserError(f"unknown method {name!r} in option {item!r}; valid methods: {_valid_names()}")
        out.setdefault(name, {}).update(check_options(name, {key: value}))
    return out


def get_method(spec, **options):
    """Instantiate the adapter for ``spec`` (MethodSpec or 'name[:steps]'); imports it lazily.

    The adapter gets every option of the method: the registry's defaults, overridden by ``options``."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    info = METHODS[spec.name]
    if not info.target:
        raise UserError(f"{spec.name} is a reference row that `sfv-bench run` makes itself, not a generator")
    given = check_options(spec.name, {**options, **dict(getattr(spec, "options", ()))})
    module, cls = info.target.split(":")
    adapter = getattr(importlib.import_module(module), cls)
    return adapter(spec.name, spec.steps, {**info.option_defaults(), **given}, user_options=given)


def list_methods() -> list[dict]:
    """One row per method: name, steps, default_steps, stack, cfg, description, options."""
    return [{"name": n, "steps": i.steps_text(), "default_steps": i.default_steps, "stack": i.default_stack,
             "cfg": i.uses_cfg(), "description": i.description,
             "options": {k: {"default": o.default, "help": o.help} for k, o in i.options.items()}}
            for n, i in METHODS.items()]


def cli_ls(args=None) -> int:
    """`sfv-bench ls`: print the methods, their step counts, default stack, CFG and options."""
    import textwrap

    from tabulate import tabulate

    rows = [[m["name"], m["steps"], m["default_steps"], m["stack"], "yes" if m["cfg"] else "no",
             textwrap.fill(m["description"], 70)] for m in list_methods()]
    print(tabulate(rows, headers=["method", "steps allowed", "default", "stack", "CFG", "description"],
                   tablefmt="simple"))
    print("\noptions (NAME.KEY=VALUE):")
    for m in list_methods():
        for key, o in m["options"].items():
            print(f"  {m['name']}.{key} = {o['default']!r}")
            print(textwrap.fill(o["help"], 96, initial_indent="      ", subsequent_indent="      "))
    print("\nspecs: comma-separated NAME[:STEPS], e.g. svd:25,svd:16,animatelcm:4,sfv:1")
    print("stacks: tiny (random-init test stack), svd, svd-xt (HF cache, offline), or a pipeline folder")
    return 0
