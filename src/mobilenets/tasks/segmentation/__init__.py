"""Semantic segmentation on every backbone: LR-ASPP, DeepLabV3 and FCN, from torchvision's
segmentation pieces (see :mod:`.models`; where the heads read the backbone: :mod:`.backbone`)."""

from .backbone import segmentation_taps
from .convert import load_segmenter_weights
from .models import deeplabv3, fcn, lraspp

__all__ = ["deeplabv3", "fcn", "load_segmenter_weights", "lraspp", "segmentation_taps"]
