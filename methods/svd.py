"""SVD-family adapters: shared loading / conditioning / timing, and ``svd`` (N Euler steps + CFG)."""
from __future__ import annotations

import numpy as np
import torch

from sfv_core.env import resolve_dtype
from sfv_core.errors import UserError
from sfv_core.fsutil import sha256_json
from sfv_core.protocol import GenerationConditions

from .base import Method, check_finite
from .models.conditioning import decode_latents, encode_condition, frame_guidance, frames_to_uint8
from .models.edm import Denoiser, karras_sigmas
from .models.stacks import (check_unet, is_tiny_stack, load_pipeline, load_unet, locate_unet, resolve_stack,
                            weights_sha256)
from .models.timing import UNetTimer, cuda_device
from .models.variants import STEMS, model_sha256, stack_variant
from .sampling import sample_euler


class SVDFamilyMethod(Method):
    """Base of every method built on an SVD stack (svd, animatelcm, onestep, sfv, ufogen, ladd).

    UNet source: the ``unet`` argument of ``load``, else the ``unet`` option; when the option is
    the registry default (not set by the user) and the stack is a built-in test stack (tiny), the
    stack's own UNet stands in (no tiny AnimateLCM/SF-V weights exist); ``unet="stack"`` always means
    the stack's own UNet.

    Subclasses implement ``sample(unet, cond, noise, generators)``: the denoising loop over any
    UNet callable (the model, a timing wrapper, an options-applied runner).
    """

    def __init__(self, name, steps, options=None, user_options=()):
        super().__init__(name, steps, options, user_options)
        self.pipe = None
        self.timer = None

    # -- loading --------------------------------------------------------------------------------
    def _unet_source(self, folder, unet):
        src = unet if unet is not None else self.options.get("unet")
        user_set = unet is not None or "unet" in self.user_options
        if src in (None, "stack") or (not user_set and is_tiny_stack(folder)):
            if self.info.unet_required and src is None and not is_tiny_stack(folder):
                raise UserError(f"method {self.name} needs its UNet checkpoint: pass --{self.name}-unet DIR "
                                f"(or the option {self.name}.unet=DIR), a UNet folder exported by `sfv-train`")
            return None
        return src

    def check(self, stack=None, variant=None) -> None:
        """Resolve the stack, its weight variant and the UNet, check the UNet's config and weight keys (no
        tensor is loaded) and take the content identity of the files ``load`` reads (sha256, cached by size
        and mtime)."""
        folder = resolve_stack(stack or self.default_stack)
        src = self._unet_source(folder, None)
        self.stack_spec, self.unet_source = str(stack or self.default_stack), "stack" if src is None else str(src)
        self.variant = stack_variant(folder, variant, with_unet=src is None)
        unet_path = locate_unet(folder if src is None else src, self.options.get("weights_name"))
        unet_variant = self.variant if src is None else None       # a UNet checkpoint: the files it has
        check_unet(unet_path, folder, unet_variant)
        self.weights = {"stack_sha256": ":".join(model_sha256(folder / sub, STEMS[sub], self.variant)
                                                 for sub in ("vae", "image_encoder")),
                        "unet_file": str(unet_path), "unet_sha256": weights_sha256(unet_path, unet_variant)}

    def load(self, stack=None, device="cpu", dtype=None, variant=None, unet=None, pipe=None) -> "SVDFamilyMethod":
        """``unet``: an already loaded UNet module, or a UNet source that overrides the option.
        ``pipe``: an already loaded pipeline used as it is, its UNet included (a trainer's, holding the
        generator it trains): nothing is read from disk, no module's mode or requires_grad is changed."""
        stack = stack or self.default_stack
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype)
        if pipe is not None:
            self.pipe, self.stack_spec, self.stack_dir, self.unet_source = pipe, str(stack), stack, "module"
            self.timer = UNetTimer(pipe.unet)
            return self
        folder = resolve_stack(stack)
        src = self._unet_source(folder, unet)
        self.stack_spec = str(stack)
        unet_model = None
        if src is not None:
            unet_model = src if isinstance(src, torch.nn.Module) else load_unet(
                src, stack=folder, weights_name=self.options.get("weights_name"), dtype=self.dtype)
        self.pipe = load_pipeline(folder, self.device, self.dtype, unet=unet_model, variant=variant)
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
            with cuda_device(getattr(self, "device", "cpu")):
                torch.cuda.empty_cache()

    def describe(self) -> dict:
        d = super().describe()
        if getattr(self, "unet_source", None):  # known after check() or load()
            d.update(stack=getattr(self, "stack_spec", None) or str(self.stack_dir), unet=self.unet_source)
        d.update(getattr(self, "weights", {}))
        if getattr(self, "variant", None):
            d["variant"] = self.variant
        if self.pipe is not None:
            d.update(dtype=str(self.dtype).replace("torch.", ""), device=str(self.device))
        return d

    # -- generation -----------------------------------------------------------------------------
    def sample(self, unet, cond, noise: torch.Tensor, generators) -> torch.Tensor:
        """Latents (B, T, 4, h, w) from the conditional batch ``cond`` and unit noise, calling ``unet``."""
        raise NotImplementedError

    @torch.no_grad()
    def generate_latents(self, images, seeds, conditions: GenerationConditions | None = None,
                         **overrides) -> torch.Tensor:
        """Denoised latents (B, T_gen, 4, H/8, W/8) -- what the pipeline returns with output_type='latent'.

        Random draws per sample generator, in the pipeline's order: noise augmentation (3, H, W),
        initial latent noise (T_gen, 4, H/8, W/8), then the sampler's own draws.
        """
        from diffusers.utils.torch_utils import randn_tensor

        c = GenerationConditions.of(conditions, **overrides)
        if self.pipe is None:
            raise RuntimeError(f"{self!r}: call load() before generate()")
        images = list(images) if isinstance(images, (list, tuple)) else list(np.asarray(images))
        if len(seeds) != len(images):
            raise ValueError(f"{len(images)} images but {len(seeds)} seeds")
        frames = self.frames_to_generate(c.num_frames)
        gens = [torch.Generator(self.device).manual_seed(int(s)) for s in seeds]
        scale = self.pipe.vae_scale_factor
        for size in {(c.width, c.height)} if c.width else {(im.shape[1], im.shape[0]) for im in images}:
            if size[0] % scale or size[1] % scale:
                raise ValueError(f"generation size {size[0]}x{size[1]} must be a multiple of {scale}")
        cond = encode_condition(self.pipe, images, gens, self.device, num_frames=frames, fps=c.fps,
                                motion_bucket_id=c.motion_bucket_id, noise_aug_strength=c.noise_aug_strength,
                                width=c.width, height=c.height, resize=c.resize)
        b, h, w = len(images), cond.image_latents.shape[-2] * scale, cond.image_latents.shape[-1] * scale
        shape = (b, frames, self.pipe.unet.config.in_channels // 2, h // scale, w // scale)
        noise = randn_tensor(shape, generator=gens, device=self.device, dtype=cond.image_embeddings.dtype)
        self.timer.reset()
        latents = self.sample(self.timer, cond, noise, gens)
        total = self.timer.total_seconds()
        self.unet_call_log = list(self.timer.calls)
        self._unet_times = [total / b] * b
        return latents

    def unet_pass(self):
        if self.timer is None or self.timer.last_call is None:
            return None
        sample, args, kwargs = self.timer.last_call
        inputs = {"sample": sample, **{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}
        config = {k: v for k, v in dict(self.pipe.unet.config).items() if not k.startswith("_")}
        what = {"unet_config_sha256": sha256_json(config), "dtype": str(sample.dtype).replace("torch.", ""),
                "device": str(sample.device),
                "inputs": {k: list(v.shape) for k, v in inputs.items() if isinstance(v, torch.Tensor)}}
        unet = self.pipe.unet

        @torch.no_grad()
        def replay():
            return unet(sample, *args, **kwargs)

        return sha256_json(what)[:16], what, replay

    def timed_part(self, images, seeds, conditions: GenerationConditions | None = None) -> torch.Tensor:
        return self.generate_latents(images, seeds, conditions)

    def generate(self, images, seeds, conditions: GenerationConditions | None = None,
                 **overrides) -> np.ndarray:
        c = GenerationConditions.of(conditions, **overrides)
        latents = self.generate_latents(images, seeds, c)
        check_finite(self.name, latents, seeds, "latents")
        frames = decode_latents(self.pipe.vae, latents, c.decode_chunk_size or latents.shape[1], keep=c.num_frames,
                                videos=c.decode_videos)
        check_finite(self.name, frames, seeds, "decoded frames")
        return frames_to_uint8(frames)


class SVDMethod(SVDFamilyMethod):
    """``svd:N``: SVD's Euler sampler with N Karras steps and frame-wise CFG (one batch-2 call per step).

    Equal to ``StableVideoDiffusionPipeline(image, num_inference_steps=N, min_guidance_scale,
    max_guidance_scale, fps, motion_bucket_id, noise_aug_strength, decode_chunk_size,
    generator=torch.Generator(device).manual_seed(seed))`` for a batch of one.
    """

    def sample(self, unet, cond, noise, generators):
        guidance = None
        if self.cfg:
            guidance = frame_guidance(float(self.options["min_guidance"]), float(self.options["max_guidance"]),
                                      noise.shape[0], noise.shape[1], noise.device, noise.dtype)
        den = Denoiser(unet, cond.image_embeddings, cond.image_latents, cond.added_time_ids, guidance)
        return sample_euler(den, noise, karras_sigmas(self.steps))
