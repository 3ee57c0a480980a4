"""``animatelcm:N`` -- AnimateLCM-SVD-xt with its own sampler (docs/reference.md#animatelcm-sampler), N in {1, 2, 4, 8}.

Sampler: 40 training levels (Karras, sigma 0.002..700, rho 7); for N steps the levels
idx = arange(N) * (40 // N), sigma = Karras(idx / 39), followed by 0; UNet timestep 0.25 ln sigma;
x_0 = noise * sqrt(700^2 + 1); x_{i+1} = D(x_i; s_i) + s_{i+1} z_i with fresh noise z_i; no CFG (one
batch-1 UNet call per step). The released model is 25-frame SVD-xt: ``gen_frames`` (default 25)
frames are generated, all of them decoded with ``decode_chunk_size=8`` (the official
``batch_inference.py``; the temporal decoder mixes frames within a chunk, so this changes the
pixels) and the first ``num_frames`` returned (the paper's AnimateLCM*). Weights: the hub repo's
``AnimateLCM-SVD-xt-1.1.safetensors`` (the paper's "AnimateLCM-xt1.1", what ``app.py`` loads);
``weights_name=AnimateLCM-SVD-xt.safetensors`` selects 1.0.

Difference from the reference script (G-U-N/AnimateLCM ``animatelcm_svd``): its scheduler draws
the step noise from the global torch RNG; here it comes from each sample's seeded generator (same
distribution, reproducible per video). ``tests/reference/animatelcm_scheduler.py`` holds the
reference scheduler as a diffusers subclass; the tests check ``sample_lcm`` against it.
"""
from __future__ import annotations

from sfv_core.errors import UserError
from sfv_core.protocol import GenerationConditions

from .base import check_finite
from .models.conditioning import decode_latents, frames_to_uint8
from .models.edm import Denoiser
from .sampling import animatelcm_sigmas, sample_lcm
from .svd import SVDFamilyMethod


class AnimateLCMMethod(SVDFamilyMethod):
    """``animatelcm:N`` and ``lcm:N`` (see module doc). Options: unet, weights_name, gen_frames, decode_*."""

    def frames_to_generate(self, num_frames: int) -> int:
        gen = int(self.options.get("gen_frames") or 0) or num_frames
        if gen < num_frames:
            raise UserError(f"animatelcm: gen_frames={gen} is fewer than the {num_frames} frames requested")
        return gen

    def generate(self, images, seeds, conditions: GenerationConditions | None = None, **overrides):
        """Generate, then decode per ``decode_frames`` / ``decode_chunk_size`` (see the module doc)."""
        c = GenerationConditions.of(conditions, **overrides)
        if self.options["decode_frames"] == "kept":      # the first num_frames latents, the protocol's chunk
            return super().generate(images, seeds, c)
        if self.options["decode_frames"] != "all":
            raise UserError(f"animatelcm.decode_frames takes all or kept (got {self.options['decode_frames']!r})")
        chunk = int(self.options["decode_chunk_size"]) or c.decode_chunk_size
        latents = self.generate_latents(images, seeds, c)
        check_finite(self.name, latents, seeds, "latents")
        frames = decode_latents(self.pipe.vae, latents, chunk, videos=c.decode_videos)[:, :c.num_frames]
        check_finite(self.name, frames, seeds, "decoded frames")
        return frames_to_uint8(frames)

    def sample(self, unet, cond, noise, generators):
        den = Denoiser(unet, cond.image_embeddings, cond.image_latents, cond.added_time_ids)
        return sample_lcm(den, noise, animatelcm_sigmas(self.steps), generators)
