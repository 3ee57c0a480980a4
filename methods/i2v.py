"""``i2v``: any diffusers image-to-video pipeline (Wan, LTX-Video, CogVideoX, ...) as a row of Table 1.

The pipeline's own ``__call__`` makes each video, one video per call, with
``torch.Generator(device).manual_seed(seed)`` of the harness's per-video seed, ``output_type="np"``: the frames
are the pipeline's bits. Then the protocol mapping of ``methods.i2v_spec`` (which native frames are scored),
``round(255 x)`` to uint8 (as diffusers' ``numpy_to_pil``) and a resize to the conditioning size (the harness
resizes to the scoring size, as for SVD). Text-conditioned pipelines get ``prompt_for(class, template)``.

Latency: the denoiser's forwards are counted and timed (``methods.i2v_clock``); the text encoder, image
encoder and VAE encode / decode are timed apart (``last_part_times``, written into ``latency.json`` as
``parts``). Weights come only from a local folder or the offline HF cache, safetensors only, no remote code.
"""
from __future__ import annotations

import gc
import inspect
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from sfv_core.data.transforms import resize_frames
from sfv_core.env import resolve_dtype
from sfv_core.errors import UserError
from sfv_core.fsutil import folder_sha256, sha256_cached, sha256_json
from sfv_core.protocol import GEN, GenerationConditions

from .base import Method, check_finite
from .i2v_clock import PipelineClocks
from .i2v_spec import TIMING_LABEL, calls_per_video, frame_indices, native_fps, prompt_for, uses_cfg
from .models.stacks import hf_snapshot, is_repo_id

log = logging.getLogger(__name__)
WEIGHT_FILES = ("*.json", "*.safetensors", "*.txt", "*.model")


def resolve_folder(source, what: str, marker: str = "model_index.json") -> Path:
    """A local folder holding ``marker``, or the snapshot of a repo id in the offline HF cache."""
    path = Path(str(source)).expanduser()
    if path.is_dir() or path.is_file():
        return path
    if is_repo_id(str(source)):
        return hf_snapshot(str(source), what)
    raise UserError(f"{what} {source} does not exist: pass a folder (with {marker}) or a repo id in the HF cache")


def _folder_identity(folder: Path) -> str:
    """sha256 of a pipeline or model folder as loaded: every config, tokenizer and safetensors file."""
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return sha256_json([folder_sha256(folder, WEIGHT_FILES), *[[p.name, folder_sha256(p, WEIGHT_FILES)] for p in subs]])


def _check_prompt_cleaner(cls) -> None:
    """Wan-family pipelines clean prompts with ftfy, which diffusers imports only when present."""
    module = sys.modules.get(cls.__module__)
    if module is not None and hasattr(module, "basic_clean") and not hasattr(module, "ftfy"):
        raise UserError(f"{cls.__name__} cleans its prompts with the ftfy package: pip install ftfy")


def _pipeline_call(folder: Path) -> tuple[str, dict]:
    """(class name, ``__call__`` parameters) of the pipeline in ``folder``; UserError unless image-to-video."""
    import diffusers

    index = folder / "model_index.json"
    if not index.is_file():
        raise UserError(f"{folder} has no model_index.json: expected a diffusers pipeline folder "
                        f"(save_pretrained layout)")
    cls_name = json.loads(index.read_text()).get("_class_name", "")
    cls = getattr(diffusers, cls_name, None)
    params = inspect.signature(cls.__call__).parameters if cls is not None and hasattr(cls, "__call__") else {}
    if not {"image", "num_frames"} <= set(params):
        raise UserError(f"{folder} holds {cls_name or 'an unknown class'}, not a diffusers image-to-video "
                        f"pipeline (its __call__ must take image and num_frames)")
    _check_prompt_cleaner(cls)
    return cls_name, dict(params)


def _sample_size(transformer: Path, folder: Path) -> tuple:
    """(height, width) a pipeline whose ``__call__`` leaves the size open generates: the transformer's
    ``sample_height/width`` latents times the VAE's spatial factor (as CogVideoX's pipeline computes it)."""
    try:
        t = json.loads((Path(transformer) / "config.json").read_text())
        vae = json.loads((folder / "vae" / "config.json").read_text())
        scale = 2 ** (len(vae["block_out_channels"]) - 1)
        return t["sample_height"] * scale, t["sample_width"] * scale
    except (OSError, KeyError, ValueError, TypeError):
        return None, None


class I2VMethod(Method):
    takes_labels = True          # the harness passes each video's class name (``labels=``)

    def __init__(self, name, steps, options=None, user_options=()):
        super().__init__(name, steps, options, user_options)
        self.pipe = self.clocks = self.plan = None
        self._part_times: list[dict] = []

    @property
    def cfg(self) -> bool:
        """Guidance above 1, the pipeline's own default guidance once ``check()`` has read it."""
        return uses_cfg(self.plan["class"], self.plan["guidance"]) if self.plan else self.info.uses_cfg(self.options)

    # -- files ----------------------------------------------------------------------------------
    def check(self, stack=None, variant=None) -> None:
        """Resolve the pipeline (and transformer / LoRA), read its class and ``__call__`` defaults, take the
        content identity of its files; loads no weights. ``stack`` is not used (the pipeline is the stack)."""
        if not self.options.get("pipeline"):
            raise UserError(f"method {self.name} needs a pipeline: {self.name}:FOLDER_OR_REPO[:STEPS] "
                            f"(or the option {self.name}.pipeline=FOLDER)")
        folder = resolve_folder(self.options["pipeline"], "image-to-video pipeline")
        cls_name, params = _pipeline_call(folder)
        default = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
        guidance = self.options.get("guidance")
        try:
            guidance = float(default.get("guidance_scale", 1.0) if guidance in (None, "") else guidance)
        except ValueError:
            raise UserError(f"option {self.name}.guidance={guidance!r} is not a number") from None
        self.plan = {"folder": folder, "class": cls_name, "params": set(params), "default": default,
                     "guidance": guidance,
                     "fps": native_fps(cls_name, float(self.options.get("fps") or default.get("frame_rate") or 0)),
                     "transformer": self._transformer_folder(), "lora": self._lora_path()}
        ids = [_folder_identity(folder)]
        if self.plan["transformer"]:
            ids.append(_folder_identity(self.plan["transformer"]))
        if self.plan["lora"]:
            ids.append(_folder_identity(self.plan["lora"]) if self.plan["lora"].is_dir()
                       else sha256_cached(self.plan["lora"]))
        self.weights = {"stack": str(folder), "stack_sha256": sha256_json(ids),
                        "unet": str(self.plan["transformer"] or "pipeline")}

    def _transformer_folder(self) -> Path | None:
        src = self.options.get("transformer")
        if not src:
            return None
        path = resolve_folder(src, "transformer", "config.json")
        path = path / "transformer" if (path / "transformer" / "config.json").is_file() else path
        if not (path / "config.json").is_file():
            raise UserError(f"transformer {src}: no config.json in {path} (expected a save_pretrained folder)")
        return path

    def _lora_path(self) -> Path | None:
        src = self.options.get("lora")
        if not src:
            return None
        try:
            import peft  # noqa: F401 - diffusers' LoRA loading needs it
        except ImportError:
            raise UserError(f"option {self.name}.lora needs the peft package: pip install peft") from None
        return resolve_folder(src, "LoRA", "*.safetensors")

    # -- loading --------------------------------------------------------------------------------
    def load(self, stack=None, device="cpu", dtype=None, variant=None) -> "I2VMethod":
        import diffusers

        if self.plan is None:
            self.check(stack, variant)
        self.device, self.dtype = torch.device(device), resolve_dtype(dtype or "float32")
        kw = dict(torch_dtype=self.dtype, local_files_only=True, use_safetensors=True)
        if variant:
            kw["variant"] = variant
        if self.plan["transformer"]:
            cfg = json.loads((self.plan["transformer"] / "config.json").read_text())
            kw["transformer"] = getattr(diffusers, cfg["_class_name"]).from_pretrained(
                self.plan["transformer"], torch_dtype=self.dtype, local_files_only=True, use_safetensors=True)
        pipe = diffusers.DiffusionPipeline.from_pretrained(self.plan["folder"], **kw)
        if self.plan["lora"]:
            pipe.load_lora_weights(str(self.plan["lora"]))
            pipe.fuse_lora(lora_scale=float(self.options.get("lora_scale", 1.0)))
        pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        self.pipe, self.clocks = pipe, PipelineClocks(pipe, self.device)
        log.info("%s: %s from %s (%s, %s; denoiser %s)", self.name, self.plan["class"], self.plan["folder"],
                 self.device, self.dtype, self.plan["transformer"] or "the pipeline's")
        return self

    def unload(self) -> None:
        if self.clocks is not None:
            self.clocks.remove()
        self.pipe = self.clocks = None
        gc.collect()
        if getattr(self, "device", None) is not None and self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- generation -----------------------------------------------------------------------------
    def call_kwargs(self, label: str) -> dict:
        """Everything the pipeline's ``__call__`` gets besides image and generator."""
        o, params = self.options, self.plan["params"]
        kw = {"prompt": prompt_for(label, o.get("prompt") or "{words}"), "num_inference_steps": self.steps,
              "guidance_scale": self.plan["guidance"], "output_type": "np"}
        for key, name in (("height", "height"), ("width", "width"), ("frames", "num_frames"),
                          ("max_sequence_length", "max_sequence_length")):
            if int(o.get(key) or 0):
                kw[name] = int(o[key])
        if o.get("negative_prompt"):
            kw["negative_prompt"] = o["negative_prompt"]
        if o.get("fps") and "frame_rate" in params:
            kw["frame_rate"] = int(o["fps"])
        return kw

    def native_video(self, image: np.ndarray, seed: int, label: str) -> np.ndarray:
        """The pipeline's own output for one conditioning image: float (F, H, W, 3) in [0, 1]."""
        from PIL import Image

        self.clocks.reset()
        generator = torch.Generator(self.device).manual_seed(int(seed))
        out = self.pipe(image=Image.fromarray(np.asarray(image, np.uint8)), generator=generator,
                        **self.call_kwargs(label))
        video = np.asarray(out.frames[0], dtype=np.float32)
        batches, want = self.clocks.denoiser_batches(), self.unet_calls_per_video()
        if batches != [want["batch"]] * want["calls"]:
            raise UserError(f"{self.name}: {self.plan['class']} made denoiser calls of batch {batches}, not "
                               f"{want['calls']} x batch {want['batch']} as the table states; its CFG rule is not "
                               f"known here (methods/i2v_spec.py: SEPARATE_CFG)")
        self.unet_call_log += batches
        self._unet_times.append(self.clocks.denoiser_seconds())
        self._part_times.append(self.clocks.part_seconds())
        return video

    def generate(self, images, seeds, conditions: GenerationConditions | None = None, labels=None,
                 **overrides) -> np.ndarray:
        c = GenerationConditions.of(conditions, **overrides)
        labels = list(labels) if labels is not None else [TIMING_LABEL] * len(images)
        self.unet_call_log, self._unet_times, self._part_times = [], [], []
        videos = []
        for image, seed, label in zip(images, seeds, labels):
            raw = self.native_video(image, seed, label)
            check_finite(self.name, raw[None], [seed], "frames")
            idx = frame_indices(len(raw), self.plan["fps"], c.num_frames, c.fps, self.options.get("frame_rule"))
            frames = (np.clip(raw[idx], 0.0, 1.0) * 255).round().astype(np.uint8)
            videos.append(resize_frames(frames, np.shape(image)[1], np.shape(image)[0]))
        return np.stack(videos)

    def last_part_times(self) -> dict:
        """Seconds per video of the text encoder, image encoder, VAE encode and decode (last video)."""
        return dict(self._part_times[-1]) if self._part_times else {}

    # -- what the table says --------------------------------------------------------------------
    def unet_calls_per_video(self) -> dict:
        if self.plan is None:
            self.check()
        return calls_per_video(self.plan["class"], self.steps, self.plan["guidance"])

    def unet_pass(self):
        clock = self.clocks.last_denoiser() if self.clocks is not None else None
        if clock is None:
            return None
        args, kwargs = clock.last_call
        inputs = {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}
        config = {k: v for k, v in dict(clock.owner.config).items() if not k.startswith("_")}
        what = {"model": type(clock.owner).__name__, "config_sha256": sha256_json(config),
                "dtype": str(self.dtype).replace("torch.", ""), "device": str(self.device),
                "inputs": {k: list(v.shape) for k, v in inputs.items() if isinstance(v, torch.Tensor)}}
        return sha256_json(what)[:16], what, clock.replay

    def describe(self) -> dict:
        out = super().describe()
        if self.plan is None:
            return out
        d, o = self.plan["default"], self.options
        native = {"height": int(o.get("height") or 0) or d.get("height"),
                  "width": int(o.get("width") or 0) or d.get("width"),
                  "frames": int(o.get("frames") or 0) or d.get("num_frames"), "fps": self.plan["fps"]}
        if native["height"] is None or native["width"] is None:     # CogVideoX: from its transformer's config
            size = _sample_size(self.plan["transformer"] or self.plan["folder"] / "transformer", self.plan["folder"])
            native["height"] = native["height"] or size[0]
            native["width"] = native["width"] or size[1]
        try:
            scored = frame_indices(native["frames"], native["fps"], GEN.num_frames, GEN.fps, o.get("frame_rule"))
        except (UserError, TypeError) as e:
            scored = str(e)
        out.update(self.weights, pipeline_class=self.plan["class"], guidance_scale=self.plan["guidance"],
                   prompt_template=o.get("prompt"),
                   example_prompt=prompt_for(TIMING_LABEL, o.get("prompt") or "{words}"),
                   protocol_mapping={"native": native, "frame_rule": o.get("frame_rule"),
                                     f"frames_scored_{GEN.num_frames}_at_{GEN.fps}fps": scored,
                                     "resize": "native -> conditioning size -> scoring size (320x240), as SVD"})
        return out
