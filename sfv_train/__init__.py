"""sfv-train: SF-V latent adversarial training of a one-step SVD generator, with UFOGen and LADD on
the same framework (paper sec. 3-4; docs/reference.md#discriminator). A library: the command line is bench.cli.

Modules: ``config`` (options, presets), ``noise`` (generator levels, D-noise rules), ``disc`` (frozen
UNet encoder + spatial/temporal projection heads), ``losses`` (hinge, pseudo-Huber, R1), ``data``
(videos -> cached latents, LADD teacher latents, data order), ``ema``, ``checkpoint`` (atomic
checkpoints, RNG, export), ``loop`` (what every trainer shares), ``trainer`` (the adversarial step).
The EDM denoiser and Karras levels are methods.models.edm.
"""
