"""Model stacks: where the SVD components come from, and the tiny random-init stack for tests.

A *stack* is a diffusers ``StableVideoDiffusionPipeline`` folder (``model_index.json`` plus the
subfolders ``unet``, ``vae``, ``image_encoder``, ``feature_extractor``, ``scheduler``). Specs:

* ``mini`` -- the mini world's trained stack, shipped in the repository (methods/models/mini.py).
* ``tiny`` -- the real SVD architectures at toy size with seeded random weights (``configs.TINY_CONFIGS``).
  Built once per (seed, configs, diffusers/transformers version) and saved with
  ``save_pretrained`` under ``cache_dir('stacks')``; every load goes through ``from_pretrained``,
  exactly like a real stack.
* ``svd`` / ``svd-xt`` -- the Hugging Face repos ``stabilityai/stable-video-diffusion-img2vid``
  and ``stabilityai/stable-video-diffusion-img2vid-xt``, taken from the local HF cache only.
* a folder path, or any other ``owner/name`` repo id already in the HF cache.

Its weights: the plain safetensors files or a variant's (``fp16``), by the one rule of ``variants.py``.

Nothing here touches the network: a missing stack is a one-line ``UserError`` naming the folder
or repo id and the command that fetches it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from sfv_core.errors import UserError
from sfv_core.fsutil import cache_dir, sha256_cached

from .configs import TINY_CONFIGS
from .variants import STEMS, choose_variant, model_sha256, stack_variant, weight_files

STACK_REPOS = {
    "svd": "stabilityai/stable-video-diffusion-img2vid",
    "svd-xt": "stabilityai/stable-video-diffusion-img2vid-xt",
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


def build_pipeline(configs: dict, seed: int, vae=None, unet=None, image_encoder=None, device="cpu"):
    """An SVD pipeline from configs (``torch.manual_seed(seed + k)`` before the k-th random component);
    ``vae``, ``unet``, ``image_encoder`` replace the random ones when given. The models are made on
    ``device`` (``meta``: shapes only); the scheduler and the feature extractor hold no weights."""
    import torch

    quiet_hf_logging()
    from diffusers import (AutoencoderKLTemporalDecoder, EulerDiscreteScheduler,
                           StableVideoDiffusionPipeline, UNetSpatioTemporalConditionModel)
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    c = configs
    with torch.device(device) if str(device) != "cpu" else contextlib.nullcontext():
        torch.manual_seed(seed)
        unet = unet if unet is not None else UNetSpatioTemporalConditionModel(**c["unet"])
        torch.manual_seed(seed + 1)
        vae = vae if vae is not None else AutoencoderKLTemporalDecoder(**c["vae"])
        torch.manual_seed(seed + 2)
        image_encoder = image_encoder if image_encoder is not None else \
            CLIPVisionModelWithProjection(CLIPVisionConfig(**c["image_encoder"]))
    fe = dict(c["feature_extractor"])
    crop, size = fe.pop("crop_size"), fe.pop("size")
    feature_extractor = CLIPImageProcessor(crop_size={"height": crop, "width": crop}, size={"shortest_edge": size},
                                           **fe)
    scheduler = EulerDiscreteScheduler.from_config(c["scheduler"])
    return StableVideoDiffusionPipeline(vae=vae, image_encoder=image_encoder, unet=unet,
                                        scheduler=scheduler, feature_extractor=feature_extractor)


def save_stack(pipe, folder: Path, dtype=None, variant: str | None = None) -> None:
    """``save_pretrained`` (safetensors; weights cast to ``dtype`` if given, named as ``variant``'s files
    if given) with the feature extractor recorded under the hub's class name (transformers picks its
    backend at load time: CLIPImageProcessorPil without torchvision), exactly like the real SVD folders."""
    if dtype is not None:
        pipe = pipe.to(dtype=dtype)
    pipe.save_pretrained(folder, safe_serialization=True, variant=variant)
    index = json.loads((folder / "model_index.json").read_text())
    index["feature_extractor"] = ["transformers", "CLIPImageProcessor"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


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
        save_stack(build_pipeline(TINY_CONFIGS, seed), tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "model_index.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def hf_snapshot(repo_id: str, what: str) -> Path:
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


def is_repo_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "/", "~"))


def is_tiny_stack(folder) -> bool:
    """A random-init tiny stack built by ``tiny_stack_dir`` (in the suite's cache): its UNet stands in
    for checkpoints that do not exist at its size."""
    folder = Path(folder)
    return folder.name.startswith("tiny-s") and folder.resolve().parent == cache_dir("stacks").resolve()


def resolve_stack(spec: str | os.PathLike | None = "tiny", mini_world: str | os.PathLike | None = None) -> Path:
    """Folder of a stack spec: 'tiny', 'mini' (the stack of ``mini_world``, default the shipped mini world),
    'svd', 'svd-xt', a folder path, or a repo id in the HF cache."""
    spec = "tiny" if spec is None else str(spec)
    if spec == "tiny":
        return tiny_stack_dir()
    if spec == "mini":
        from .mini import verified

        return verified("stack", mini_world)
    if spec.startswith("tiny-s") and spec[6:].isdigit():
        return tiny_stack_dir(int(spec[6:]))
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise UserError(f"stack folder {path} has no model_index.json: expected a diffusers "
                            f"StableVideoDiffusionPipeline folder (save_pretrained layout)")
        return path
    if spec in STACK_REPOS:
        folder = hf_snapshot(STACK_REPOS[spec], f"stack '{spec}'")
    elif is_repo_id(spec):
        folder = hf_snapshot(spec, f"stack '{spec}' (no such local folder either)")
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
    """Load a ``StableVideoDiffusionPipeline`` from a stack (local files only, safetensors only, no remote
    code).

    ``unet``: an already loaded UNet that replaces the stack's (e.g. from ``load_unet``). ``variant``: the
    weight files (``fp16``); None picks them by the rule of ``variants.py`` (plain, else the one complete
    variant).
    """
    import torch

    quiet_hf_logging()      # before the pipeline module imports transformers' image processor (a warning)
    from diffusers import StableVideoDiffusionPipeline

    dtype = torch.float32 if dtype is None else dtype
    folder = resolve_stack(stack)
    kwargs = {"dtype": dtype, "local_files_only": True, "use_safetensors": True}
    variant = stack_variant(folder, variant, with_unet=unet is None)
    if variant:
        kwargs["variant"] = variant
    if unet is not None:
        kwargs["unet"] = unet
    try:
        pipe = StableVideoDiffusionPipeline.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, EnvironmentError) as e:
        raise UserError(f"could not load the stack at {folder}: {str(e).splitlines()[0]}") from e
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def locate_unet(source, weights_name: str | None = None) -> Path:
    """The diffusers UNet folder (holding config.json) or the .safetensors state-dict file that a UNet
    source names; never the network. ``source`` may be

      * a diffusers model folder (``config.json`` + weights), or a folder holding one under
        ``unet/`` (a pipeline folder or an ``sfv-train`` export);
      * a ``.safetensors`` file with a UNet state dict (AnimateLCM-SVD-xt's release format);
      * a HF repo id in the local cache, holding either of the above (``weights_name`` picks
        the state-dict file when the repo holds several).
    """
    src = str(source)
    path = Path(src).expanduser()
    if not path.exists():
        if is_repo_id(src):
            path = hf_snapshot(src, f"UNet '{src}' (no such local file or folder either)")
        else:
            raise UserError(f"UNet folder or file {path} does not exist: pass a diffusers UNet folder "
                            f"(e.g. written by `sfv-train export`), a .safetensors state dict, or a repo id")
    if path.is_dir():
        for d in (path, path / "unet"):
            if (d / "config.json").is_file():
                return d
        if (path / "export" / "unet" / "config.json").is_file():
            raise UserError(f"{path} is an sfv-train run folder: pass its exported UNet, {path / 'export' / 'unet'}")
        if (path / "state.json").is_file() and (path / "generator.safetensors").is_file():
            raise UserError(f"{path} is an sfv-train checkpoint: pass the run's exported UNet, "
                            f"{path.parent.parent / 'export' / 'unet'}")
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
    return path


def unet_variant(folder: Path, variant: str | None = None) -> str | None:
    """The weight variant a located UNet folder loads with (``variants.py``'s rule)."""
    return choose_variant({Path(folder): STEMS["unet"]}, variant, f"UNet folder {folder}")


def weights_sha256(path, variant: str | None = None) -> str:
    """Content identity of a located UNet (folder: its config and the variant's weight files; file: the file)."""
    path = Path(path)
    return model_sha256(path, STEMS["unet"], unet_variant(path, variant)) if path.is_dir() else sha256_cached(path)


def load_unet(source, *, stack=None, weights_name: str | None = None, dtype=None, variant: str | None = None):
    """Load a ``UNetSpatioTemporalConditionModel`` from a source ``locate_unet`` accepts (a folder: its
    ``variant``'s files, by ``variants.py``'s rule). A state-dict file takes its architecture from
    ``stack``'s UNet config and is loaded strictly."""
    import torch
    from diffusers import UNetSpatioTemporalConditionModel

    dtype = torch.float32 if dtype is None else dtype
    path = locate_unet(source, weights_name)
    if path.is_dir():
        variant = unet_variant(path, variant)
        return UNetSpatioTemporalConditionModel.from_pretrained(path, dtype=dtype, local_files_only=True,
                                                                use_safetensors=True,
                                                                **({"variant": variant} if variant else {}))
    if stack is None:
        raise UserError(f"loading the UNet state dict {path} needs the stack whose UNet architecture it fits")
    from safetensors.torch import load_file

    unet = UNetSpatioTemporalConditionModel.from_config(_unet_config(resolve_stack(stack) / "unet"))
    state = load_file(str(path))
    _check_keys(path, {k: tuple(v.shape) for k, v in state.items()}, unet)
    unet.load_state_dict(state, strict=True)
    return unet.to(dtype)


def _unet_config(folder: Path) -> dict:
    from diffusers import UNetSpatioTemporalConditionModel

    try:
        return UNetSpatioTemporalConditionModel.load_config(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise UserError(f"{folder / 'config.json'} is not a readable UNet config ({str(e).splitlines()[0]})") from None


def _check_keys(path, shapes: dict, unet) -> None:
    own = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    missing = sorted(set(own) - set(shapes))
    unexpected = sorted(set(shapes) - set(own))
    wrong = sorted(k for k in set(own) & set(shapes) if own[k] != shapes[k])
    if missing or unexpected or wrong:
        raise UserError(f"UNet weights {path} do not fit the UNet config ({len(missing)} missing, "
                        f"{len(unexpected)} unexpected, {len(wrong)} wrong-shape keys, e.g. "
                        f"{(missing or unexpected or wrong)[0]}): wrong stack or wrong folder?")


def check_unet(path: Path, stack, variant: str | None = None) -> None:
    """Pre-flight of a located UNet without loading its tensors: the config parses and the keys and
    shapes of the weight files ``load_unet`` / ``load_pipeline`` would read (``variant``'s) fit (a
    UserError naming the file otherwise)."""
    from diffusers import UNetSpatioTemporalConditionModel
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        config = _unet_config(path)
        files = [f for f in weight_files(path, STEMS["unet"], unet_variant(path, variant)) if f.suffix != ".json"]
    else:
        config, files = _unet_config(resolve_stack(stack) / "unet"), [path]
    shapes = {}
    for weights in files:
        try:
            with safe_open(str(weights), "pt") as f:
                shapes.update({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
        except Exception as e:  # noqa: BLE001 - a damaged or foreign file
            raise UserError(f"{weights} is not a readable safetensors file ({str(e).splitlines()[0]})") from None
    weights = files[0] if len(files) == 1 else path
    import torch

    with torch.device("meta"):
        try:
            unet = UNetSpatioTemporalConditionModel.from_config(config)
        except Exception as e:  # noqa: BLE001 - a config diffusers cannot build
            raise UserError(f"{path}: the UNet config does not build a UNet ({str(e).splitlines()[0]})") from None
    _check_keys(weights, shapes, unet)
