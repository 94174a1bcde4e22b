"""Anti-aliased downsampling (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again").

MobileNetV4 ``conv_aa_*`` models downsample with a 2x2 average pool after a stride-1 conv;
``conv_blur_medium`` with a 3x3 binomial blur, zero ("constant") padded ("blurpc").
"""

from __future__ import annotations

from math import comb

import torch
import torch.nn as nn
import torch.nn.functional as F


class BlurPool2d(nn.Module):
    """Depthwise binomial blur followed by subsampling.

    Args:
        channels: number of channels (the filter is stored per channel).
        filt_size: binomial filter size (3 gives [1, 2, 1] / 4 in each direction).
        stride: subsampling factor.
        pad_mode: ``"reflect"`` (classic blur pool) or ``"constant"`` (zeros, "blurpc").
    """

    def __init__(self, channels: int, filt_size: int = 3, stride: int = 2,
                 pad_mode: str = "reflect"):
        super().__init__()
        if filt_size < 2:
            raise ValueError(f"filt_size must be >= 2, got {filt_size}")
        self.channels, self.filt_size, self.stride, self.pad_mode = channels, filt_size, stride, pad_mode
        pad = ((stride - 1) + (filt_size - 1)) // 2
        self.padding = (pad, pad, pad, pad)
        coeffs = torch.tensor([comb(filt_size - 1, k) for k in range(filt_size)], dtype=torch.float32)
        coeffs = coeffs / coeffs.sum()
        filt = (coeffs[:, None] * coeffs[None, :]).expand(channels, 1, filt_size, filt_size)
        # Fixed, not learned and not part of any checkpoint.
        self.register_buffer("filt", filt.contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, self.padding, mode=self.pad_mode)
        return F.conv2d(x, self.filt.to(x.dtype), stride=self.stride, groups=self.channels)


def create_aa(kind: str | None, channels: int, stride: int = 2) -> nn.Module:
    """Anti-aliasing pool by name: ``avg`` (2x2 average pool), ``blur`` (reflect-padded binomial
    blur), ``blurpc`` (zero-padded binomial blur); ``None`` gives identity."""
    if kind is None:
        return nn.Identity()
    key = kind.lower().replace("_", "").replace("-", "")
    if key in ("avg", "avgpool"):
        return nn.AvgPool2d(kernel_size=stride, stride=stride)
    if key in ("blur", "blurpool"):
        return BlurPool2d(channels, stride=stride, pad_mode="reflect")
    if key == "blurpc":
        return BlurPool2d(channels, stride=stride, pad_mode="constant")
    raise ValueError(f"unknown anti-aliasing layer {kind!r}; expected 'avg', 'blur' or 'blurpc'")
