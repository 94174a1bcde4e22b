"""Building blocks of MobileNet V1-V5 and Mobile-Former."""

from .conv_blocks import (
    ConvBlock,
    DepthwiseSeparable,
    FusedIB,
    InvertedResidual,
    ResidualBlock,
    UniversalInvertedBottleneck,
)
from .attention import MobileMQA, MultiQueryAttention2d
from .msfa import MultiScaleFusionAdapter
from .mobileformer import (ChannelShuffle, DynamicReLU, Former, FormerToMobile, LiteBottleneck,
                           MergedHead, MobileBottleneck, MobileDownsample, MobileFormerBlock,
                           MobileToFormer)

__all__ = [
    "ChannelShuffle",
    "ConvBlock",
    "DepthwiseSeparable",
    "DynamicReLU",
    "Former",
    "FormerToMobile",
    "FusedIB",
    "InvertedResidual",
    "LiteBottleneck",
    "MergedHead",
    "MobileBottleneck",
    "MobileDownsample",
    "MobileFormerBlock",
    "MobileMQA",
    "MobileToFormer",
    "MultiQueryAttention2d",
    "MultiScaleFusionAdapter",
    "ResidualBlock",
    "UniversalInvertedBottleneck",
]
