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
        x = self.ffn(concat_at_first_size(maps, self.interpolation))
        return self.norm(to_resolution(x, maps[0], self.resolution[0], self.resolution[1]))


# The two steps that depend on the maps' sizes, as functions: leaves under torch.fx symbolic
# tracing (one call each in the graph, the sizes read when it runs), scriptable by TorchScript.
def concat_at_first_size(maps: List[torch.Tensor], mode: str) -> torch.Tensor:
    """The maps concatenated along channels, the coarser ones resized to the first's size."""
    h, w = maps[0].shape[-2], maps[0].shape[-1]
    resized = [F.interpolate(m, size=(h, w), mode=mode) if m.shape[-2] < h or m.shape[-1] < w else m for m in maps]
    return torch.cat(resized, dim=1)


def to_resolution(x: torch.Tensor, first: torch.Tensor, oh: int, ow: int) -> torch.Tensor:
    """``x`` (at ``first``'s size) brought to ``(oh, ow)``: average pooling where the size
    divides, bilinear resizing otherwise."""
    h, w = first.shape[-2], first.shape[-1]
    if h == oh and w == ow:
        return x
    if h % oh or w % ow:
        return F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False)
    return F.avg_pool2d(x, kernel_size=(h // oh, w // ow))


torch.fx.wrap("concat_at_first_size")
torch.fx.wrap("to_resolution")
