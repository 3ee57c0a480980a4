"""sfv-train: SF-V latent adversarial training of a one-step SVD generator, with UFOGen and LADD on
the same framework (paper sec. 3-4, FACTS sec. 4 and 6).

Modules: ``noise`` (Karras levels, D-noise rules, EDM scalings), ``model`` (EDM generator, EMA),
``disc`` (frozen UNet encoder + spatial/temporal projection heads), ``losses`` (hinge, pseudo-Huber,
R1), ``data`` (videos -> cached latents, LADD teacher latents, data order), ``config`` (options and
presets), ``trainer`` (the loop, checkpoints, export), ``cli`` (``sfv-train``).
"""
