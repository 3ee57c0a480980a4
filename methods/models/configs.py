"""Model configurations: the real SVD architectures (full size) and the tiny test stack.

Every config is what diffusers' / transformers' classes take (``from_config``); the full-size ones
are the hub configs of stabilityai/stable-video-diffusion-img2vid and -img2vid-xt (unet/, vae/,
image_encoder/ = laion CLIP ViT-H/14 vision tower, feature_extractor/, scheduler/), checked against
those files and the published parameter counts in the tests (tests/methods/test_full_configs.py).
"""
from __future__ import annotations

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

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

# SVD's CLIPImageProcessor settings (feature_extractor/preprocessor_config.json of both hub repos: 224 crop
# of the 224 shortest edge, bicubic, OpenAI CLIP mean/std), in the form ``stacks.build_pipeline`` takes
# (crop_size / size as one int each).
SVD_FEATURE_EXTRACTOR_CONFIG = {
    "crop_size": 224,
    "size": 224,
    "do_center_crop": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": list(CLIP_MEAN),
    "image_std": list(CLIP_STD),
    "resample": 3,
}

# Real SVD architectures at toy size; StableVideoDiffusionPipeline accepts them as-is.
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
    "feature_extractor": SVD_FEATURE_EXTRACTOR_CONFIG,
    "scheduler": SVD_SCHEDULER_CONFIG,
}


# The mini world: the real architectures, small enough to train on a CPU and to run the default
# `sfv-bench run` in about a minute (14 frames at 32x32, latents 14x4x8x8). Measured on 2 cores
# with one thread: the UNet ~0.4 GFLOP (5-7 ms) per video step, the VAE decode ~50 ms per video.
# 4x VAE downsampling (3 levels): at 8x a 32x32 frame leaves 4x4 latents; channel counts are
# multiples of 32 because diffusers' blocks use 32-group GroupNorm. Cross-attention (the CLIP
# embedding) sits at the 2x2 level and in the mid block. scaling_factor is measured by the build
# (1 / std of the latents) and written into the shipped vae/config.json.
MINI_CONFIGS = {
    "unet": {
        "sample_size": 8, "in_channels": 8, "out_channels": 4,
        "down_block_types": ["DownBlockSpatioTemporal", "DownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal"],
        "up_block_types": ["CrossAttnUpBlockSpatioTemporal", "UpBlockSpatioTemporal", "UpBlockSpatioTemporal"],
        "block_out_channels": [32, 32, 64], "addition_time_embed_dim": 32,
        "projection_class_embeddings_input_dim": 96, "layers_per_block": 1, "cross_attention_dim": 32,
        "transformer_layers_per_block": 1, "num_attention_heads": [1, 1, 2], "num_frames": 14,
    },
    "vae": {
        "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 3,
        "block_out_channels": [32, 32, 64], "layers_per_block": 1, "latent_channels": 4, "sample_size": 32,
        "scaling_factor": 1.0, "force_upcast": False,
    },
    "image_encoder": dict(TINY_CONFIGS["image_encoder"]),
    "feature_extractor": dict(TINY_CONFIGS["feature_extractor"]),
    "scheduler": SVD_SCHEDULER_CONFIG,
}

# Full size: the hub configs of https://huggingface.co/stabilityai/stable-video-diffusion-img2vid (files
# unet/config.json, vae/config.json, image_encoder/config.json = laion CLIP ViT-H/14 vision tower,
# feature_extractor/preprocessor_config.json, scheduler/scheduler_config.json). -img2vid-xt (25 frames,
# AnimateLCM-SVD-xt's base) differs only in unet num_frames. The tests compare every built component with
# copies of those files (tests/reference/svd_hub_configs.json) and the published parameter counts.
FULL_CONFIGS = {
    "unet": {
        "sample_size": 96, "in_channels": 8, "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"],
        "up_block_types": ["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 3,
        "block_out_channels": [320, 640, 1280, 1280], "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 768, "layers_per_block": 2, "cross_attention_dim": 1024,
        "transformer_layers_per_block": 1, "num_attention_heads": [5, 10, 20, 20], "num_frames": 14,
    },
    "vae": {
        "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "latent_channels": 4,
        "sample_size": 768, "scaling_factor": 0.18215, "force_upcast": True,
    },
    "image_encoder": {
        "hidden_size": 1280, "intermediate_size": 5120, "projection_dim": 1024, "num_hidden_layers": 32,
        "num_attention_heads": 16, "num_channels": 3, "image_size": 224, "patch_size": 14,
        "hidden_act": "gelu", "layer_norm_eps": 1e-5, "attention_dropout": 0.0, "dropout": 0.0,
        "initializer_factor": 1.0, "initializer_range": 0.02,
    },
    "feature_extractor": SVD_FEATURE_EXTRACTOR_CONFIG,
    "scheduler": SVD_SCHEDULER_CONFIG,
}
FULL_XT_CONFIGS = {**FULL_CONFIGS, "unet": {**FULL_CONFIGS["unet"], "num_frames": 25}}


def build_models(configs: dict, device="cpu") -> dict:
    """Random-init {'unet', 'vae', 'image_encoder'} from configs on ``device`` (``meta``: shapes only),
    in eval mode without gradients."""
    import torch
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.device(device):
        models = {
            "unet": UNetSpatioTemporalConditionModel.from_config(configs["unet"]),
            "vae": AutoencoderKLTemporalDecoder.from_config(configs["vae"]),
            "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(**configs["image_encoder"])),
        }
    # A few parameters are made with the legacy torch.Tensor([...]) constructor (AlphaBlender's
    # mix_factor), which ignores the default device: move them too.
    return {k: m.to(device).eval().requires_grad_(False) for k, m in models.items()}


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())
