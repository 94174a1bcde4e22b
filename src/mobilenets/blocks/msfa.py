"""MobileNetV5's multi-scale fusion adapter (MSFA): the neck of Gemma 3n's vision encoder
(timm's ``MobileNetV5MultiScaleFusionAdapter``; no paper describes it)."""

from __future__ import annotations

from typing import List, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import make_divisible
from ..layers.activations import ActLike
from ..layers.conv import NormLayer
from ..layers.norm import RMSNorm2d
from .conv_blocks import UniversalInvertedBottleneck


class MultiScaleFusionAdapter(nn.Module):
    """Fuse feature maps of several strides into one map on a fixed grid.

    The maps (finest first) are resized to the first one's grid (``interpolation``, only where
    a map is coarser), concatenated on channels, mixed by a UIB in its FFN form (1x1 expand to
    ``make_divisible(in * expansion)`` + norm + act, 1x1 project + norm; no shortcut, no layer
    scale), brought to ``resolution x resolution`` (average pooling when the grid is a whole
    multiple of it, else bilinear resizing) and normalised.

    Args:
        in_chs: channels of each input map (or their sum).
        out_chs: output channels.
        resolution: output grid side (an int) or ``(H, W)``.
        expansion: FFN expansion ratio.
        interpolation: ``"nearest"`` or ``"bilinear"`` upsampling of the coarser maps.
        act, norm: the FFN's activation and the norm factory (RMSNorm in MobileNetV5).
    """

    def __init__(self, in_chs: Union[int, Sequence[int]], out_chs: int, resolution: Union[int, Sequence[int]] = 16,
                 expansion: float = 2.0, interpolation: str = "nearest", act: ActLike = "gelu_tanh",
                 norm: NormLayer = RMSNorm2d):
        super().__init__()
        self.in_chs = in_chs if isinstance(in_chs, int) else sum(in_chs)
        self.out_chs = out_chs
        self.resolution = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        self.interpolation = interpolation
        self.ffn = UniversalInvertedBottleneck(self.in_chs, out_chs, make_divisible(self.in_chs * expansion),
                                               start_k=0, mid_k=0, act=act, norm=norm, skip=False)
        self.norm = norm(out_chs)

    def forward(self, maps: List[torch.Tensor]) -> torch.Tensor:
        """``(N, out_chs, *resolution)`` from the maps, finest first."""
        h, w = maps[0].shape[-2:]
        resized = [F.interpolate(m, size=(h, w), mode=self.interpolation)
                   if m.shape[-2] < h or m.shape[-1] < w else m for m in maps]
        x = self.ffn(torch.cat(resized, dim=1))
        oh, ow = self.resolution
        if (h, w) != (oh, ow):
            if h % oh or w % ow:
                x = F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False)
            else:
                x = F.avg_pool2d(x, kernel_size=(h // oh, w // ow))
        return self.norm(x)
