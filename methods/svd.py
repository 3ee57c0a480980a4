"""SVD-family adapters: shared loading / conditioning / timing, and ``svd`` (N Euler steps + CFG)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.fsutil import UserError

from .base import Method, UNetTimer, check_finite, resolve_dtype
from .conditioning import decode_latents, encode_condition, frame_guidance, frames_to_uint8
from .registry import METHODS, option_defaults
from .sampling import SVDDenoiser, karras_sigmas, sample_euler


def _is_tiny(folder) -> bool:
    """A tiny stack built by ``stacks.tiny_stack_dir`` (in the suite's cache)."""
    from bench.fsutil import cache_dir

    return folder.name.startswith("tiny-s") and folder.resolve().parent == cache_dir("stacks").resolve()


class SVDFamilyMethod(Method):
    """Base of every method built on an SVD stack (svd, animatelcm, onestep, sfv, ufogen, ladd).

    Options not given take the registry's defaults (``methods.registry.METHODS``). UNet source:
    the ``unet`` argument of ``load``, else the ``unet`` option; when that is the registry default
    (not set by the user) and the stack is ``tiny``, the tiny stack's own UNet stands in (no tiny
    AnimateLCM/SF-V weights exist); ``unet="stack"`` always means the stack's own UNet.
    """

    unet_required = False  # True: a non-tiny stack needs an explicit UNet checkpoint

    def __init__(self, name, steps, **options):
        super().__init__(name, steps, **options)
        info = METHODS.get(name)
        self.user_options = set(options)
        self.options = {**option_defaults(name), **options} if info else dict(options)
        if info:
            self.default_stack = info.default_stack
        self.pipe = None

    # -- loading --------------------------------------------------------------------------------
    def _unet_source(self, folder, unet):
        src = unet if unet is not None else self.options.get("unet")
        user_set = unet is not None or "unet" in self.user_options
        if src in (None, "stack") or (not user_set and _is_tiny(folder)):
            if self.unet_required and src is None and not _is_tiny(folder):
                raise UserError(f"method {self.name} needs its UNet checkpoint: pass --{self.name}-unet DIR "
                                f"(or the option {self.name}.unet=DIR), a UNet folder exported by `sfv-train`")
            return None
        return src

    def check(self, stack=None) -> None:
        from .stacks import _hf_snapshot, _is_repo_id, resolve_stack

        folder = resolve_stack(stack or self.default_stack)
        src = self._unet_source(folder, None)
        self.stack_spec, self.unet_source = str(stack or self.default_stack), "stack" if src is None else str(src)
        if isinstance(src, str) and src != "stack" and not Path(src).expanduser().exists():
            if not _is_repo_id(src):
                raise UserError(f"{self.name}: UNet folder or file {src} does not exist")
            _hf_snapshot(src, f"{self.name} UNet '{src}'")

    def load(self, stack=None, device="cpu", dtype=None, unet=None) -> "SVDFamilyMethod":
        from .stacks import load_pipeline, load_unet, resolve_stack

        stack = stack or self.default_stack
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype)
        folder = resolve_stack(stack)
        src = self._unet_source(folder, unet)
        self.stack_spec = str(stack)
        unet_model = None
        if src is not None:
            unet_model = src if isinstance(src, torch.nn.Module) else load_unet(
                src, stack=folder, weights_name=self.options.get("weights_name"), dtype=self.dtype)
        self.pipe = load_pipeline(folder, self.device, self.dtype, unet=unet_model)
        for m in (self.pipe.unet, self.pipe.vae, self.pipe.image_encoder):
            m.eval().requires_grad_(False)
        self.timer = UNetTimer(self.pipe.unet)
        self.stack_dir = folder
        self.unet_source = "stack" if src is None else str(src) if not isinstance(src, torch.nn.Module) else "module"
        return self

    def unload(self) -> None:
        """Drop the pipeline and the timer (and the CUDA cache) so the next method has the memory."""
        self.pipe = None
        self.timer = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def describe(self) -> dict:
        d = super().describe()
        if getattr(self, "unet_source", None):  # known after check() or load()
            d.update(stack=getattr(self, "stack_spec", None) or str(self.stack_dir), unet=self.unet_source)
        if self.pipe is not None:
            d.update(dtype=str(self.dtype).replace("torch.", ""), device=str(self.device))
        return d

    # -- generation -----------------------------------------------------------------------------
    def frames_to_generate(self, num_frames: int) -> int:
        return num_frames

    def sample(self, cond, noise: torch.Tensor, generators) -> torch.Tensor:
        """Latents (B, T, 4, h, w) from the conditional batch ``cond`` and unit noise."""
        raise NotImplementedError

    @torch.no_grad()
    def generate_latents(self, images, seeds, *, num_frames: int = 14, fps: int = 7,
                         motion_bucket_id: int = 127, noise_aug_strength: float = 0.02) -> torch.Tensor:
        """Denoised latents (B, T_gen, 4, H/8, W/8) -- what the pipeline returns with output_type='latent'.

        Random draws per sample generator, in the pipeline's order: noise augmentation (3, H, W),
        initial latent noise (T_gen, 4, H/8, W/8), then the sampler's own draws.
        """
        from diffusers.utils.torch_utils import randn_tensor

        if self.pipe is None:
            raise RuntimeError(f"{self!r}: call load() before generate()")
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (B, H, W, 3), got {images.dtype} {images.shape}")
        b, h, w = images.shape[:3]
        scale = self.pipe.vae_scale_factor
        if h % scale or w % scale:
            raise ValueError(f"image size {w}x{h} must be a multiple of {scale}")
        if len(seeds) != b:
            raise ValueError(f"{b} images but {len(seeds)} seeds")
        frames = self.frames_to_generate(num_frames)
        gens = [torch.Generator(self.device).manual_seed(int(s)) for s in seeds]
        cond = encode_condition(self.pipe, images, gens, self.device, num_frames=frames, fps=fps,
                                motion_bucket_id=motion_bucket_id, noise_aug_strength=noise_aug_strength)
        shape = (b, frames, self.pipe.unet.config.in_channels // 2, h // scale, w // scale)
        noise = randn_tensor(shape, generator=gens, device=self.device, dtype=cond.image_embeddings.dtype)
        self.timer.reset()
        latents = self.sample(cond, noise, gens)
        total = self.timer.total_seconds()
        self.unet_call_log = list(self.timer.calls)
        self._unet_times = [total / b] * b
        return latents

    def generate(self, images, seeds, *, num_frames: int = 14, fps: int = 7, motion_bucket_id: int = 127,
                 noise_aug_strength: float = 0.02, decode_chunk_size: int = 14) -> np.ndarray:
        latents = self.generate_latents(images, seeds, num_frames=num_frames, fps=fps,
                                        motion_bucket_id=motion_bucket_id, noise_aug_strength=noise_aug_strength)
        check_finite(self.name, latents, seeds, "latents")
        frames = decode_latents(self.pipe, latents, decode_chunk_size or latents.shape[1], keep=num_frames)
        check_finite(self.name, frames, seeds, "decoded frames")
        return frames_to_uint8(frames)


class SVDMethod(SVDFamilyMethod):
    """``svd:N``: SVD's Euler sampler with N Karras steps and frame-wise CFG (one batch-2 call per step).

    Equal to ``StableVideoDiffusionPipeline(image, num_inference_steps=N, min_guidance_scale,
    max_guidance_scale, fps, motion_bucket_id, noise_aug_strength, decode_chunk_size,
    generator=torch.Generator(device).manual_seed(seed))`` for a batch of one.
    """

    @property
    def cfg(self) -> bool:
        return float(self.options["max_guidance"]) > 1

    def sample(self, cond, noise, generators):
        guidance = None
        if self.cfg:
            guidance = frame_guidance(float(self.options["min_guidance"]), float(self.options["max_guidance"]),
                                      noise.shape[0], noise.shape[1], self.device, noise.dtype)
        den = SVDDenoiser(self.timer, cond.image_embeddings, cond.image_latents, cond.added_time_ids, guidance)
        return sample_euler(den, noise, karras_sigmas(self.steps))
