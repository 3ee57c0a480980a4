"""Helpers shared by the tests (not part of the package)."""
from __future__ import annotations

import torch

from methods.models.configs import TINY_CONFIGS

TINY_UNET_CONFIG = TINY_CONFIGS["unet"]


def tiny_unet(seed: int = 0):
    """The tiny SVD UNet (random init, seeded)."""
    from diffusers import UNetSpatioTemporalConditionModel

    torch.manual_seed(seed)
    return UNetSpatioTemporalConditionModel(**TINY_UNET_CONFIG)
