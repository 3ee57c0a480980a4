"""The suite's part of the full-size smoke (benchmarks/full_size_smoke_train.py --parts meta): the sfv-train
trainers' models built from the real SVD configuration on the meta device with the defaults' optimisers,
and what one checkpoint of each weighs (docs/training.md#checkpoints-weight-and-retention). The full-size
steps themselves (minutes and 13-19 GB each on this CPU at an 8x8 latent) do not fit the suite:
docs/training.md#full-size-on-a-cpu runs them."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from full_size_smoke_train import meta_trainer  # noqa: E402

SVD_UNET_PARAMS = 1_524_623_082   # stabilityai/stable-video-diffusion-img2vid unet/config.json, built


@pytest.mark.slow
def test_full_size_checkpoint_weight_on_meta(tmp_path):
    """sfv's checkpoint (lcm's, AdamW: 24.39 GB, is in the benchmark's meta part: too slow for the suite)."""
    from sfv_train.checkpoint import checkpoint_sizes

    t = meta_trainer("sfv", tmp_path)
    sizes = checkpoint_sizes(*t.checkpoint_parts())
    g = 4 * SVD_UNET_PARAMS                                           # float32 weights
    assert sizes["generator.safetensors"] == sizes["ema.safetensors"] == g
    heads = sum(p.numel() for p in t.D.head_parameters())             # SM3: a momentum buffer per parameter
    assert 54.0e6 < heads < 54.2e6 and 4 * heads < sizes["heads.safetensors"] < 1.01 * 4 * heads  # + norm buffers
    assert g < sizes["optimizer_g.pt"] < 1.002 * g                   # + one accumulator per dimension
    assert round(sum(sizes.values()) / 1e9, 2) == 18.74
