"""Shapes, models and inputs of the latency benchmark, and FLOPs counted on the meta device."""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from methods.models.configs import build_models
from methods.models.conditioning import decode_latents
from methods.models.edm import SIGMA_MAX, c_noise, scalar_sigma
from methods.models.stacks import load_pipeline, resolve_stack
from sfv_core.errors import UserError

SHAPES = {"paper": (14, 576, 1024), "tiny": (14, 64, 64)}  # frames, height, width


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


def load_models(stack, configs: dict | None, device, seed: int = 0, variant=None) -> tuple[dict, str]:
    """fp32 models on ``device``: from a stack folder (real weights, ``variant``'s files) or random from
    ``configs``."""
    if stack is not None:
        pipe = load_pipeline(stack, device, torch.float32, variant=variant)
        models = {"unet": pipe.unet, "vae": pipe.vae, "image_encoder": pipe.image_encoder}
        for m in models.values():
            m.eval().requires_grad_(False)
        return models, f"stack {stack}"
    torch.manual_seed(seed)
    return build_models(configs, device), "random weights (configs, seed %d)" % seed


def unet_inputs(unet_config: dict, batch: int, frames: int, hw, device, dtype, seed: int = 0) -> dict:
    """Seeded random UNet inputs of the real layout (what methods.models.edm.Denoiser passes at sigma = 700)."""
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    sample = torch.randn(batch, frames, unet_config["in_channels"], h, w, generator=g)
    ehs = torch.randn(batch, 1, unet_config["cross_attention_dim"], generator=g)
    ids = torch.tensor([[6.0, 127.0, 0.02]]).repeat(batch, 1)
    return {"sample": sample.to(device, dtype), "timestep": c_noise(scalar_sigma(SIGMA_MAX)).to(device),
            "encoder_hidden_states": ehs.to(device, dtype), "added_time_ids": ids.to(device, dtype)}


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops())


def count_all_flops(configs: dict, shape: Shape, frame_counts, decode_chunk_size: int) -> dict:
    """FLOPs of every timed part, counted on the meta device."""
    meta = build_models(configs, "meta")
    hw = shape.latent_hw()
    out = {}
    for frames in sorted(frame_counts):
        suffix = "" if frames == shape.num_frames else f"_{frames}f"
        for b in (1, 2):
            inp = unet_inputs(configs["unet"], b, frames, hw, "meta", torch.float32)
            out[f"unet_batch{b}{suffix}"] = count_flops(lambda: meta["unet"](**inp, return_dict=False))
        z = torch.empty(frames, meta["vae"].config.latent_channels, *hw, device="meta")
        out[f"vae_decode_{frames}f"] = count_flops(
            lambda: decode_latents(meta["vae"], z[None], decode_chunk_size or frames))
    img = torch.empty(1, 3, shape.height, shape.width, device="meta")
    out["vae_encode"] = count_flops(lambda: meta["vae"].encode(img).latent_dist.mode())
    size = configs["image_encoder"].get("image_size", 224)
    clip_in = torch.empty(1, 3, size, size, device="meta")
    out["image_encoder"] = count_flops(lambda: meta["image_encoder"](clip_in).image_embeds)
    return out
