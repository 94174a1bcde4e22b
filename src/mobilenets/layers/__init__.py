"""Primitives shared by every family: conv + norm + act (TensorFlow SAME padding on request),
activations, RMSNorm, SE, layer scale, stochastic depth and anti-aliased downsampling."""

from .activations import get_act, ACTIVATIONS
from .conv import Conv2dSame, ConvNormAct, create_conv2d, make_divisible, same_padding, use_same_padding
from .misc import DropPath, LayerScale, SqueezeExcite, drop_path
from .norm import RMSNorm2d
from .aa import BlurPool2d, create_aa

__all__ = [
    "ACTIVATIONS",
    "BlurPool2d",
    "Conv2dSame",
    "ConvNormAct",
    "DropPath",
    "LayerScale",
    "RMSNorm2d",
    "SqueezeExcite",
    "create_aa",
    "create_conv2d",
    "drop_path",
    "get_act",
    "make_divisible",
    "same_padding",
    "use_same_padding",
]
