"""The generic image-to-video method's torch-free parts: its spec, the protocol mapping, the prompt.

Spec: ``i2v:SOURCE[:STEPS][:KEY=VALUE...]``. SOURCE is a diffusers image-to-video pipeline folder
(``model_index.json``) or a repo id in the offline Hugging Face cache (no ``:`` in it); STEPS the denoising
steps (default 50); KEY=VALUE options of this row only (``i2v:/m/wan:4:transformer=/ckpt/student:guidance=1``),
over the ``i2v.KEY=VALUE`` options of every i2v row. The row's key is the canonical spec text.

Protocol mapping (recorded per run in the method's options and ``describe()``): the pipeline generates at its
native resolution and frame count; the protocol scores ``num_frames`` frames at ``fps`` (14 at 7 fps). With
``frame_rule=time`` protocol frame k (at k / fps seconds) is the native frame nearest in time,
``floor(k * native_fps / fps + 1/2)``: at 16 fps frames 0 2 5 7 9 11 14 16 18 21 23 25 27 30, at 24 fps
0 3 7 10 14 17 21 24 27 31 34 38 41 45 (the first 2 s of the clip, as SVD's 14 frames at 7 fps);
``frame_rule=first`` keeps the first ``num_frames`` (as AnimateLCM* does). The frames are then resized to the
conditioning size and, by the harness, to the scoring size (320x240) as for SVD.
"""
from __future__ import annotations

import re

from sfv_core.errors import UserError

DEFAULT_STEPS = 50
PROMPT = "a video of {words}"
TIMING_LABEL = "ApplyEyeMakeup"   # the class a timing pass prompts with (it is not given one)

# Native frame rate by pipeline class prefix (the model cards' export fps); ``fps=N`` overrides it.
NATIVE_FPS = {"Wan": 16, "SkyReelsV2": 24, "LTX": 24, "CogVideoX": 8, "HunyuanVideo": 24}
# Pipelines whose classifier-free guidance makes two denoiser calls per step (cond, uncond) instead of one
# call at batch 2.
SEPARATE_CFG = ("Wan", "SkyReelsV2")
# Pipelines whose guidance_scale is embedded guidance (an input of the transformer, one call per step): no CFG.
EMBEDDED_GUIDANCE = ("HunyuanVideo",)


def parse_i2v_spec(item: str, name: str = "i2v"):
    """``i2v:SOURCE[:STEPS][:KEY=VALUE...]`` -> MethodSpec with the row's options, or a UserError."""
    from .registry import MAX_STEPS, MethodSpec, check_options

    parts = [p.strip() for p in item.strip().split(":")]
    rest = parts[1:]
    source = rest.pop(0) if rest and not re.match(r"[A-Za-z_]\w*=", rest[0]) and not rest[0].isdigit() else ""
    steps = DEFAULT_STEPS
    if rest and "=" not in rest[0]:
        text = rest.pop(0)
        if not text.isdigit() or not 1 <= int(text) <= MAX_STEPS:
            raise UserError(f"bad step count {text!r} in {item!r}: {name} takes 1 to {MAX_STEPS} steps "
                            f"(expected {name}:SOURCE[:STEPS][:KEY=VALUE...])")
        steps = int(text)
    options = {}
    for pair in rest:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise UserError(f"bad part {pair!r} in {item!r}: expected {name}:SOURCE[:STEPS][:KEY=VALUE...] "
                            f"(a SOURCE path cannot hold ':')")
        options[key.strip()] = value.strip()
    if source:
        options["pipeline"] = source
    check_options(name, options)                 # names and values refused here, before anything runs
    opts = tuple(sorted(options.items()))
    key = ":".join([name, *([source] if source else []), str(steps),
                    *(f"{k}={v}" for k, v in opts if not (source and k == "pipeline"))])
    return MethodSpec(name, steps, key, opts)


def frame_indices(native_frames: int, native_fps: float, num_frames: int, fps: float, rule: str = "time") -> list:
    """Native frames the protocol scores (see the module doc); UserError when the clip is too short."""
    if rule == "first":
        idx = list(range(num_frames))
    elif rule == "time":
        idx = [int(k * native_fps / fps + 0.5) for k in range(num_frames)]
    else:
        raise UserError(f"i2v option frame_rule={rule!r}: valid rules are time, first")
    if idx[-1] >= native_frames:
        raise UserError(f"the pipeline made {native_frames} frames but the protocol's {num_frames} frames at "
                        f"{fps} fps need frame {idx[-1]} of a {native_fps} fps clip: set i2v.frames (more frames) "
                        f"or i2v.fps (the model's frame rate)")
    return idx


def class_words(label: str) -> str:
    """UCF-101 class name -> words: 'ApplyEyeMakeup' -> 'apply eye makeup', 'YoYo' -> 'yo yo'."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|_", " ", label).lower().strip()


def prompt_for(label: str, template: str = PROMPT) -> str:
    """The prompt of a video of class ``label``: ``template`` with {label} (the class name) and {words}."""
    try:
        return template.format(label=label, words=class_words(label))
    except (KeyError, IndexError, ValueError) as e:
        raise UserError(f"i2v option prompt={template!r}: {e!r}; the template may use {{label}} "
                        f"(e.g. ApplyEyeMakeup) and {{words}} (apply eye makeup)") from None


def family(class_name: str) -> str:
    """The family prefix of a pipeline class name ('WanImageToVideoPipeline' -> 'Wan'), '' if unknown."""
    return next((k for k in NATIVE_FPS if class_name.startswith(k)), "")


def native_fps(class_name: str, option: float = 0) -> float:
    if option:
        return float(option)
    if not family(class_name):
        raise UserError(f"the frame rate of {class_name} is not known here: set i2v.fps (the model's fps)")
    return float(NATIVE_FPS[family(class_name)])


def uses_cfg(class_name: str, guidance: float) -> bool:
    """Classifier-free guidance (a second, unconditional prediction per step) at this guidance scale."""
    return guidance > 1.0 and not class_name.startswith(EMBEDDED_GUIDANCE)


def calls_per_video(class_name: str, steps: int, guidance: float) -> dict:
    """Denoiser calls and batch per video the pipeline makes (checked against the counted calls)."""
    cfg = uses_cfg(class_name, guidance)
    separate = cfg and class_name.startswith(SEPARATE_CFG)
    return {"calls": steps * (2 if separate else 1), "batch": 2 if cfg and not separate else 1}
