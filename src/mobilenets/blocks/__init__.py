"""Building blocks of MobileNet V1-V4."""

from .conv_blocks import (
    ConvBlock,
    DepthwiseSeparable,
    FusedIB,
    InvertedResidual,
    ResidualBlock,
    UniversalInvertedBottleneck,
)
from .attention import MobileMQA, MultiQueryAttention2d

__all__ = [
    "ConvBlock",
    "DepthwiseSeparable",
    "FusedIB",
    "InvertedResidual",
    "MobileMQA",
    "MultiQueryAttention2d",
    "ResidualBlock",
    "UniversalInvertedBottleneck",
]
