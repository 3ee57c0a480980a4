"""``onestep`` / ``sfv`` / ``ufogen`` / ``ladd``: ONE EDM step from sigma 700 (docs/reference.md#one-step-generator).

x = 700 * n with n ~ N(0, I) (the latent draw of each sample's generator); the output is
x0 = c_skip x + c_out F(c_in x; c_noise) at sigma = 700, decoded directly: one batch-1 UNet call
per video, no CFG. ``sfv``, ``ufogen`` and ``ladd`` are this adapter pointed at a UNet checkpoint
folder written by ``sfv-train`` (option ``unet``; required except on the tiny stack); ``onestep``
defaults to the stack's own UNet.
"""
from __future__ import annotations

from .models.edm import Denoiser
from .sampling import sample_onestep
from .svd import SVDFamilyMethod


class OneStepMethod(SVDFamilyMethod):
    """Single-step generator (see module doc). Options: unet, sigma."""

    def sample(self, unet, cond, noise, generators):
        den = Denoiser(unet, cond.image_embeddings, cond.image_latents, cond.added_time_ids)
        return sample_onestep(den, noise, float(self.options["sigma"]))
