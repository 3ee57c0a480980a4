"""Inception-v1 I3D (Carreira & Zisserman 2017) with the module names of the PyTorch port used by
TATS and cd-fvd, so that their ``i3d_pretrained_400.pt`` state dict loads as-is.

Written from the architecture description of that port (piergiaj/pytorch-i3d, copied into
songweige/TATS ``tats/fvd/pytorch_i3d.py`` and songweige/content-debiased-fvd
``cdfvd/third_party/i3d/pytorch_i3d.py``); the rules it follows:

* Every convolution is ``Unit3D``: ``conv3d`` (no bias) + ``bn`` (BatchNorm3d, eps 1e-5,
  momentum 0.001) + ReLU, except the final ``logits`` unit (1x1x1 conv with bias, no BN,
  no activation).
* TensorFlow "SAME" padding computed from the input size at run time, for convolutions and
  max-pools alike: pad = max(k - s, 0) if n % s == 0 else max(k - n % s, 0), the smaller half
  in front. Max-pools pad with zeros (as the port does; inputs are post-ReLU, so >= 0).
* Stem: Conv3d_1a_7x7 (64, stride 2) -> MaxPool3d_2a_3x3 (1x3x3, stride 1x2x2) ->
  Conv3d_2b_1x1 (64) -> Conv3d_2c_3x3 (192) -> MaxPool3d_3a_3x3 (1x3x3, stride 1x2x2) ->
  Mixed_3b, Mixed_3c -> MaxPool3d_4a_3x3 (3x3x3, stride 2) -> Mixed_4b..4f ->
  MaxPool3d_5a_2x2 (2x2x2, stride 2) -> Mixed_5b, Mixed_5c -> AvgPool3d (2x7x7, stride 1,
  no padding) -> dropout -> logits.
* Inception module: b0 1x1; b1a 1x1 -> b1b 3x3x3; b2a 1x1 -> b2b 3x3x3; b3a 3x3x3 max-pool
  (stride 1) -> b3b 1x1; outputs concatenated on channels.
* Output: the logits map (B, C, T', 1, 1) squeezed spatially and averaged over T' -> (B, C).
  These are the pre-softmax Kinetics-400 logits FVD uses.

Input: (B, 3, T, H, W) in [-1, 1]. T >= 9 (T' = ceil(ceil(ceil(T/2)/2)/2) must be >= 2 for the
2x7x7 average pool); H, W must give a 7x7 map before that pool (193..224 px): the detectors feed
224x224. ``input_size`` (a multiple of 32) sizes that pool for other inputs: the mini world's
detector sees 64x64 clips through a 2x2x2 pool; 224 is the published architecture. With ``width_mult=1`` the state dict has exactly the port's 344 entries and
12,697,264 parameters; ``width_mult < 1`` scales every channel count (used only for the
toy detector).
"""
from __future__ import annotations

import math
from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

MIN_FRAMES = 9
DETECTOR_SIZE = 224        # input frames are resized to this (the published detectors' size)
FEATURE_DIM = 400          # the Kinetics-400 logits: the feature FVD uses
BN_EPS = 1e-5
BN_MOMENTUM = 0.001

# (b0, b1a, b1b, b2a, b2b, b3b) output channels of each inception module (I3D paper, fig. 3).
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def same_pad(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """TensorFlow SAME padding (front, back) for one dimension of length ``size``."""
    if size % stride == 0:
        pad = max(kernel - stride, 0)
    else:
        pad = max(kernel - size % stride, 0)
    return pad // 2, pad - pad // 2


def _pad_same(x: torch.Tensor, kernel: List[int], stride: List[int]) -> torch.Tensor:
    pt = same_pad(x.shape[2], kernel[0], stride[0])
    ph = same_pad(x.shape[3], kernel[1], stride[1])
    pw = same_pad(x.shape[4], kernel[2], stride[2])
    pads = [pw[0], pw[1], ph[0], ph[1], pt[0], pt[1]]
    if max(pads) == 0:          # 1x1x1 convolutions: no copy
        return x
    return F.pad(x, pads)


class Unit3D(nn.Module):
    """conv3d (SAME padding) [+ bn] [+ relu]; attribute names match the reference port."""

    def __init__(self, in_channels: int, out_channels: int, kernel=(1, 1, 1), stride=(1, 1, 1),
                 relu: bool = True, batch_norm: bool = True, bias: bool = False):
        super().__init__()
        self.kernel: List[int] = [int(k) for k in kernel]
        self.stride: List[int] = [int(s) for s in stride]
        self.relu = relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, padding=0, bias=bias)
        # nn.Identity keeps the module scriptable and adds no state-dict entry.
        self.bn = nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv3d(_pad_same(x, self.kernel, self.stride)))
        return F.relu(x) if self.relu else x


class MaxPool3dSame(nn.Module):
    """Max-pool with TF SAME (zero) padding.

    Computed as separable window maxima (``unfold`` + ``amax`` per dimension): bit-identical to
    ``F.max_pool3d`` (a maximum is exact and separable) and ~10x faster on CPU.
    """

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel: List[int] = [int(k) for k in kernel]
        self.stride: List[int] = [int(s) for s in stride]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _pad_same(x, self.kernel, self.stride)
        for d in range(3):
            if self.kernel[d] > 1 or self.stride[d] > 1:
                x = x.unfold(d + 2, self.kernel[d], self.stride[d]).amax(dim=-1)
        return x


class InceptionModule(nn.Module):
    def __init__(self, in_channels: int, out: Tuple[int, int, int, int, int, int]):
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0])
        self.b1a = Unit3D(in_channels, out[1])
        self.b1b = Unit3D(out[1], out[2], kernel=(3, 3, 3))
        self.b2a = Unit3D(in_channels, out[3])
        self.b2b = Unit3D(out[3], out[4], kernel=(3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, out[5])
        self.out_channels = out[0] + out[2] + out[4] + out[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """I3D returning (B, num_classes) time-averaged pre-softmax logits for (B, 3, T, H, W) in [-1, 1]."""

    def __init__(self, num_classes: int = FEATURE_DIM, in_channels: int = 3, width_mult: float = 1.0,
                 input_size: int = DETECTOR_SIZE):
        super().__init__()
        if input_size % 32 or input_size < 32:
            raise ValueError(f"input_size must be a multiple of 32, got {input_size}")
        if not 0 < width_mult <= 1:
            raise ValueError(f"width_mult must be in (0, 1], got {width_mult}")
        self.num_classes = num_classes
        self.width_mult = float(width_mult)

        def c(n: int) -> int:
            return max(1, int(math.floor(n * width_mult + 0.5)))

        self.Conv3d_1a_7x7 = Unit3D(in_channels, c(64), kernel=(7, 7, 7), stride=(2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(c(64), c(64))
        self.Conv3d_2c_3x3 = Unit3D(c(64), c(192), kernel=(3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        ch = c(192)
        for name in ("Mixed_3b", "Mixed_3c", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f",
                     "Mixed_5b", "Mixed_5c"):
            if name == "Mixed_4b":
                self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
            module = InceptionModule(ch, tuple(c(n) for n in _MIXED[name]))
            setattr(self, name, module)
            ch = module.out_channels
        self.input_size = input_size    # 224 for the published detectors: a 7x7 final map
        self.avg_pool = nn.AvgPool3d(kernel_size=(2, input_size // 32, input_size // 32), stride=(1, 1, 1))
        self.dropout = nn.Dropout(0.5)  # identity in eval mode; kept for structural parity
        self.logits = Unit3D(ch, num_classes, relu=False, batch_norm=False, bias=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Output of Mixed_5c: (B, 1024*width, T', H/32, W/32)."""
        x = self.MaxPool3d_2a_3x3(self.Conv3d_1a_7x7(x))
        x = self.MaxPool3d_3a_3x3(self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x)))
        x = self.MaxPool3d_4a_3x3(self.Mixed_3c(self.Mixed_3b(x)))
        x = self.Mixed_4f(self.Mixed_4e(self.Mixed_4d(self.Mixed_4c(self.Mixed_4b(x)))))
        x = self.MaxPool3d_5a_2x2(x)
        return self.Mixed_5c(self.Mixed_5b(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[2] < 9:   # MIN_FRAMES (literal: TorchScript-compatible)
            raise ValueError("I3D expects (B, C, T>=9, H, W), got " + str(x.shape))
        y = self.logits(self.dropout(self.avg_pool(self.forward_features(x))))
        if y.shape[3] != 1 or y.shape[4] != 1:
            raise ValueError("I3D expects frames of its input_size (224x224 for the published detectors), got input "
                             + str(x.shape))
        return y.flatten(2).mean(dim=2)   # (B, C, T', 1, 1) -> (B, C): average over time


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
