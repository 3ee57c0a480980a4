"""The models under every method: configurations, stacks (where weights come from), the EDM
denoiser, conditioning and decoding, UNet timing."""
