"""Object detection on every backbone: SSDLite, Faster R-CNN FPN and RetinaNet FPN, from
torchvision's detection pieces (see :mod:`.models`; cut points in :mod:`.backbone`)."""

from .backbone import Taps, fpn_taps, freeze_layers, frozen_batchnorm, ssdlite_taps, stride_taps, units
from .convert import load_detector_weights
from .models import BackboneFPN, SSDLiteFeatures, fasterrcnn_fpn, retinanet_fpn, ssdlite320

__all__ = ["BackboneFPN", "SSDLiteFeatures", "Taps", "fasterrcnn_fpn", "fpn_taps", "freeze_layers",
           "frozen_batchnorm", "load_detector_weights", "retinanet_fpn", "ssdlite320", "ssdlite_taps",
           "stride_taps", "units"]
