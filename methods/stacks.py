"""Model stacks: where the SVD components come from, and the tiny random-init stack for tests.

A *stack* is a diffusers ``StableVideoDiffusionPipeline`` folder (``model_index.json`` plus the
subfolders ``unet``, ``vae``, ``image_encoder``, ``feature_extractor``, ``scheduler``). Specs:

* ``tiny`` -- the real SVD architectures at toy size with seeded random weights (FACTS sec. 2).
  Built once per (seed, configs, diffusers/transformers version) and saved with
  ``save_pretrained`` under ``cache_dir('stacks')``; every load goes through ``from_pretrained``,
  exactly like a real stack.
* ``svd`` / ``svd-xt`` -- the Hugging Face repos ``stabilityai/stable-video-diffusion-img2vid``
  and ``stabilityai/stable-video-diffusion-img2vid-xt``, taken from the local HF cache only.
* a folder path, or any other ``owner/name`` repo id already in the HF cache.

Nothing here touches the network: a missing stack is a one-line ``UserError`` naming the folder
or repo id and the command that fetches it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from bench.fsutil import UserError, cache_dir

STACK_REPOS = {
    "svd": "stabilityai/stable-video-diffusion-img2vid",
    "svd-xt": "stabilityai/stable-video-diffusion-img2vid-xt",
}
ANIMATELCM_REPO = "wangfuyun/AnimateLCM-SVD-xt"

# The scheduler config of stabilityai/stable-video-diffusion-img2vid(-xt) (scheduler/scheduler_config.json).
# Note timestep_spacing="leading": it makes EulerDiscreteScheduler.init_noise_sigma = sqrt(sigma_max^2 + 1).
SVD_SCHEDULER_CONFIG = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "sigma_max": 700.0,
    "sigma_min": 0.002,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "trained_betas": None,
    "use_karras_sigmas": True,
}

# Real SVD architectures at toy size (FACTS sec. 2); StableVideoDiffusionPipeline accepts them as-is.
TINY_CONFIGS = {
    "unet": {
        "sample_size": 8,
        "in_channels": 8,
        "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"],
        "up_block_types": ["UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"],
        "block_out_channels": [32, 64],
        "addition_time_embed_dim": 32,
        "projection_class_embeddings_input_dim": 96,  # 3 added time ids x addition_time_embed_dim
        "layers_per_block": 2,
        "cross_attention_dim": 32,  # = CLIP projection_dim
        "transformer_layers_per_block": 1,
        "num_attention_heads": [2, 4],
        "num_frames": 14,
    },
    "vae": {  # 4 levels -> the real 8x spatial downsampling
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "block_out_channels": [32, 32, 64, 64],
        "layers_per_block": 1,
        "latent_channels": 4,
        "sample_size": 64,
        "scaling_factor": 0.18215,
        "force_upcast": True,
    },
    "image_encoder": {
        "hidden_size": 32,
        "projection_dim": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 37,
        "image_size": 224,
        "patch_size": 14,
        "num_channels": 3,
    },
    "feature_extractor": {  # SVD's CLIPImageProcessor settings (OpenAI CLIP mean/std)
        "crop_size": 224,
        "size": 224,
        "do_center_crop": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
    },
    "scheduler": SVD_SCHEDULER_CONFIG,
}


def _versions_key() -> str:
    import diffusers
    import transformers

    def mm(v):
        return ".".join(v.split(".")[:2])

    return f"diffusers{mm(diffusers.__version__)}-transformers{mm(transformers.__version__)}"


def tiny_stack_key(seed: int = 0) -> str:
    """Folder name of the tiny stack: seed + short hash of the configs and library versions."""
    blob = json.dumps({"configs": TINY_CONFIGS, "versions": _versions_key()}, sort_keys=True)
    return f"tiny-s{seed}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def _build_tiny_pipeline(seed: int):
    """Random-init SVD pipeline from TINY_CONFIGS (torch.manual_seed(seed) before each component)."""
    import torch
    from diffusers import (AutoencoderKLTemporalDecoder, EulerDiscreteScheduler,
                           StableVideoDiffusionPipeline, UNetSpatioTemporalConditionModel)
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    c = TINY_CONFIGS
    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(**c["unet"])
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLTemporalDecoder(**c["vae"])
    torch.manual_seed(seed + 2)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**c["image_encoder"]))
    fe = dict(c["feature_extractor"])
    feature_extractor = CLIPImageProcessor(
        crop_size={"height": fe.pop("crop_size"), "width": 224}, size={"shortest_edge": fe.pop("size")}, **fe)
    scheduler = EulerDiscreteScheduler.from_config(c["scheduler"])
    return StableVideoDiffusionPipeline(vae=vae, image_encoder=image_encoder, unet=unet,
                                        scheduler=scheduler, feature_extractor=feature_extractor)


def tiny_stack_dir(seed: int = 0) -> Path:
    """Folder of the tiny stack, building and saving it (atomically) on first use.

    The pipeline is built in a temporary folder next to the final one and renamed into place,
    so an interrupted build never leaves a half-written stack; a concurrent builder that loses
    the race simply discards its copy.
    """
    root = cache_dir("stacks")
    final = root / tiny_stack_key(seed)
    if (final / "model_index.json").is_file():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        pipe = _build_tiny_pipeline(seed)
        pipe.save_pretrained(tmp, safe_serialization=True)
        # Record the feature extractor under the hub's class name (transformers picks its backend at
        # load time: CLIPImageProcessorPil without torchvision), exactly like the real SVD folders.
        index = json.loads((tmp / "model_index.json").read_text())
        index["feature_extractor"] = ["transformers", "CLIPImageProcessor"]
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "model_index.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _hf_snapshot(repo_id: str, what: str) -> Path:
    """Local snapshot folder of a HF repo (cache only, never the network) or a UserError."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as e:  # LocalEntryNotFoundError, offline-mode errors, bad repo id ...
        raise UserError(
            f"{what} not found locally: expected the Hugging Face repo {repo_id} in the HF cache "
            f"({_hf_cache_hint()}); fetch it on a machine with network with "
            f"`huggingface-cli download {repo_id}` (then copy the cache), or pass a local folder path"
        ) from e


def _hf_cache_hint() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
        return f"HF_HUB_CACHE={HF_HUB_CACHE}"
    except Exception:  # pragma: no cover
        return "the HF cache"


def _is_repo_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "/", "~"))


def resolve_stack(spec: str | os.PathLike | None = "tiny") -> Path:
    """Folder of a stack spec: 'tiny', 'svd', 'svd-xt', a folder path, or a repo id in the HF cache."""
    spec = "tiny" if spec is None else str(spec)
    if spec == "tiny":
        return tiny_stack_dir()
    if spec.startswith("tiny-s") and spec[6:].isdigit():
        return tiny_stack_dir(int(spec[6:]))
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise UserError(f"stack folder {path} has no model_index.json: expected a diffusers "
                            f"StableVideoDiffusionPipeline folder (save_pretrained layout)")
        return path
    if spec in STACK_REPOS:
        folder = _hf_snapshot(STACK_REPOS[spec], f"stack '{spec}'")
    elif _is_repo_id(spec):
        folder = _hf_snapshot(spec, f"stack '{spec}' (no such local folder either)")
    else:
        raise UserError(f"stack folder {path} does not exist; valid stacks: tiny, "
                        f"{', '.join(STACK_REPOS)}, a diffusers pipeline folder, or a repo id in the HF cache")
    if not (folder / "model_index.json").is_file():
        raise UserError(f"stack '{spec}' ({folder}) has no model_index.json: the HF cache holds an "
                        f"incomplete download; rerun `huggingface-cli download {STACK_REPOS.get(spec, spec)}`")
    return folder


def quiet_hf_logging() -> None:
    """No loading bars or notices from diffusers / transformers (our own bars and errors say enough)."""
    from diffusers.utils import logging as dlogging
    from transformers.utils import logging as tlogging

    for lib in (dlogging, tlogging):
        lib.disable_progress_bar()
        lib.set_verbosity_error()


def load_pipeline(stack="tiny", device="cpu", dtype=None, unet=None, variant: str | None = None):
    """Load a ``StableVideoDiffusionPipeline`` from a stack (local files only, no remote code).

    ``unet``: an already loaded UNet that replaces the stack's (e.g. from ``load_unet``).
    ``variant``: diffusers weight variant (e.g. 'fp16' for the hub's ``*.fp16.safetensors``).
    """
    import torch
    from diffusers import StableVideoDiffusionPipeline

    quiet_hf_logging()
    dtype = torch.float32 if dtype is None else dtype
    folder = resolve_stack(stack)
    kwargs = {"dtype": dtype, "local_files_only": True, "variant": variant}
    if unet is not None:
        kwargs["unet"] = unet
    try:
        pipe = StableVideoDiffusionPipeline.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, EnvironmentError) as e:
        raise UserError(f"could not load the stack at {folder}: {str(e).splitlines()[0]}") from e
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_unet(source, *, stack=None, subfolder: str | None = None, weights_name: str | None = None,
              dtype=None):
    """Load a ``UNetSpatioTemporalConditionModel`` from a local source (never the network).

    ``source`` may be
      * a diffusers model folder (``config.json`` + weights), or a folder holding one under
        ``unet/`` (a pipeline folder or an ``sfv-train`` export);
      * a ``.safetensors`` file with a UNet state dict (AnimateLCM-SVD-xt's release format): the
        architecture is taken from ``stack``'s UNet config and the weights loaded strictly;
      * a HF repo id in the local cache, holding either of the above (``weights_name`` picks
        the state-dict file when the repo holds several).
    """
    import torch
    from diffusers import UNetSpatioTemporalConditionModel

    dtype = torch.float32 if dtype is None else dtype
    src = str(source)
    path = Path(src).expanduser()
    if not path.exists():
        if _is_repo_id(src):
            path = _hf_snapshot(src, f"UNet '{src}' (no such local file or folder either)")
        else:
            raise UserError(f"UNet folder or file {path} does not exist: pass a diffusers UNet folder "
                            f"(e.g. written by `sfv-train export`), a .safetensors state dict, or a repo id")
    if path.is_dir():
        for sub in ([subfolder] if subfolder else [None, "unet"]):
            d = path / sub if sub else path
            if (d / "config.json").is_file():
                return UNetSpatioTemporalConditionModel.from_pretrained(
                    d, dtype=dtype, local_files_only=True)
        files = sorted(p.name for p in path.glob("*.safetensors"))
        if weights_name:
            if weights_name not in files:
                raise UserError(f"{path} has no {weights_name} (it has: {', '.join(files) or 'no .safetensors'})")
            path = path / weights_name
        elif len(files) == 1:
            path = path / files[0]
        else:
            raise UserError(f"{path} holds no diffusers UNet (config.json or unet/config.json) and "
                            f"{'several' if files else 'no'} .safetensors files ({', '.join(files)}); "
                            f"pick one with weights_name")
    if path.suffix != ".safetensors":
        raise UserError(f"UNet weights {path} must be a .safetensors state dict or a diffusers folder")
    if stack is None:
        raise UserError(f"loading the UNet state dict {path} needs the stack whose UNet architecture it fits")
    from safetensors.torch import load_file

    config = UNetSpatioTemporalConditionModel.load_config(resolve_stack(stack), subfolder="unet",
                                                          local_files_only=True)
    unet = UNetSpatioTemporalConditionModel.from_config(config)
    state = load_file(str(path))
    own = unet.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise UserError(f"UNet weights {path} do not fit the stack's UNet ({len(missing)} missing, "
                        f"{len(unexpected)} unexpected, {len(wrong)} wrong-shape keys, e.g. "
                        f"{(missing or unexpected or wrong)[0]}): wrong stack?")
    unet.load_state_dict(state, strict=True)
    return unet.to(dtype)
