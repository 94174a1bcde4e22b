"""LR-ASPP, DeepLabV3 and FCN on any registered backbone, assembled from torchvision's own
segmentation pieces (``LRASPP`` / ``LRASPPHead``, ``DeepLabV3`` / ``DeepLabHead`` with ASPP,
``FCN`` / ``FCNHead``, the aux-classifier pattern).

On ``mobilenetv3_large_100`` each builder makes exactly torchvision's model
(``lraspp_mobilenet_v3_large``, ``deeplabv3_mobilenet_v3_large``, and the unreleased FCN variant
assembled the same way): the same modules, BatchNorm settings and dilated backbone, so
torchvision's checkpoints (the COCO-with-VOC-labels ones included) load and give the same logits
(``tests/test_segmentation.py``). The contract is torchvision's: ``model(x)`` with ``x`` a
normalized ``(N, 3, H, W)`` batch -> ``{"out": (N, num_classes, H, W)}`` (plus ``"aux"`` with
``aux_loss``), always interpolated back to the input size. Where the heads read the backbone:
:mod:`.backbone`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch.nn as nn

from ...models.base import Backbone
from ...models.info import ModelInfo, set_model_info
from ..backbone import Taps, build_backbone
from .backbone import output_stride_of, segmentation_taps

#: torchvision runs every segmentation head on a dilated MobileNetV3 (output stride 16)
OUTPUT_STRIDE = 16
#: the size torchvision evaluates its segmentation models at (the shorter side)
EVAL_SIZE = 520


def _body(backbone: str, pretrained_backbone: Any, width_mult: Optional[float], output_stride: int,
          backbone_kwargs: Optional[dict]) -> Backbone:
    kw = dict(backbone_kwargs or {})
    if "output_stride" in kw and kw["output_stride"] != output_stride:
        raise ValueError(f"output_stride given twice ({output_stride} and backbone_kwargs "
                         f"{kw['output_stride']}); pass output_stride= only")
    kw["output_stride"] = output_stride
    return build_backbone(backbone, pretrained_backbone, width_mult, backbone_kwargs=kw)


def lraspp(backbone: str, num_classes: int = 21, pretrained: Any = None, strict: bool = True,
           pretrained_backbone: Any = None, width_mult: Optional[float] = None,
           output_stride: int = OUTPUT_STRIDE, inter_channels: int = 128, aux_loss: Optional[bool] = None,
           backbone_kwargs: Optional[dict] = None) -> nn.Module:
    """Lite R-ASPP (MobileNetV3 paper section 6.3; torchvision's ``lraspp_mobilenet_v3_large`` on
    MobileNetV3-Large) on ``backbone``: a 1x1 conv + BN + ReLU on the high-level map gated by a
    global-pool sigmoid branch, upsampled to the low-level map, both classified and summed.

    Args:
        backbone: a classification backbone name (``mobilenetv4_conv_small``, ...).
        num_classes: classes including the background (21: VOC, as torchvision).
        pretrained: a segmentation checkpoint (ours or torchvision's) to load.
        strict: every key of ``pretrained`` must fit.
        pretrained_backbone: a classification checkpoint for the backbone (e.g. the main job's
            ``best.pt``, or a timm / torchvision file).
        width_mult: backbone width (default: the registered one).
        output_stride: the backbone's (16, as torchvision; 8 or 32).
        inter_channels: the head's width (128, as torchvision).
        aux_loss: LR-ASPP has no auxiliary head (torchvision's neither); only ``None`` / False.
        backbone_kwargs: more backbone options (``drop_path_rate``, ...).
    """
    from torchvision.models.segmentation.lraspp import LRASPP

    if aux_loss:
        raise ValueError("LR-ASPP has no auxiliary head (torchvision's neither); aux_loss is for "
                         "deeplabv3_* and fcn_*")
    body = _body(backbone, pretrained_backbone, width_mult, output_stride, backbone_kwargs)
    taps = Taps(body, segmentation_taps(body), names=("low", "high"))
    model = LRASPP(taps, taps.channels[0], taps.channels[1], num_classes, inter_channels)
    return _finish(model, backbone, "lraspp", False, pretrained, strict)


def deeplabv3(backbone: str, num_classes: int = 21, pretrained: Any = None, strict: bool = True,
              pretrained_backbone: Any = None, width_mult: Optional[float] = None,
              output_stride: int = OUTPUT_STRIDE, aux_loss: Optional[bool] = None,
              atrous_rates: Sequence[int] = (12, 24, 36), backbone_kwargs: Optional[dict] = None) -> nn.Module:
    """DeepLabV3 (Chen et al. 2017; torchvision's ``deeplabv3_mobilenet_v3_large``): ASPP
    (``DeepLabHead``: 1x1, three atrous 3x3 at ``atrous_rates``, image pooling; 256 channels) on
    the last map; with ``aux_loss`` an ``FCNHead`` on the stride-8 map (``"aux"``).

    Args: as :func:`lraspp`; ``aux_loss``: add the auxiliary head (default False, as torchvision
        without weights); ``atrous_rates``: the ASPP dilations (12, 24, 36).
    """
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3
    from torchvision.models.segmentation.fcn import FCNHead

    body = _body(backbone, pretrained_backbone, width_mult, output_stride, backbone_kwargs)
    low, high = segmentation_taps(body)
    taps = Taps(body, [low, high] if aux_loss else [high], names=("aux", "out") if aux_loss else ("out",))
    aux = FCNHead(taps.channels[0], num_classes) if aux_loss else None
    model = DeepLabV3(taps, DeepLabHead(taps.channels[-1], num_classes, tuple(atrous_rates)), aux)
    return _finish(model, backbone, "deeplabv3", bool(aux_loss), pretrained, strict)


def fcn(backbone: str, num_classes: int = 21, pretrained: Any = None, strict: bool = True,
        pretrained_backbone: Any = None, width_mult: Optional[float] = None,
        output_stride: int = OUTPUT_STRIDE, aux_loss: Optional[bool] = None,
        backbone_kwargs: Optional[dict] = None) -> nn.Module:
    """FCN (Long et al. 2015; torchvision's ``fcn_resnet50`` design, its unreleased MobileNetV3
    variant): ``FCNHead`` (3x3 conv to a quarter of the channels + BN + ReLU + dropout 0.1 + 1x1)
    on the last map; with ``aux_loss`` another on the stride-8 map.

    Args: as :func:`deeplabv3`.
    """
    from torchvision.models.segmentation.fcn import FCN, FCNHead

    body = _body(backbone, pretrained_backbone, width_mult, output_stride, backbone_kwargs)
    low, high = segmentation_taps(body)
    taps = Taps(body, [low, high] if aux_loss else [high], names=("aux", "out") if aux_loss else ("out",))
    aux = FCNHead(taps.channels[0], num_classes) if aux_loss else None
    model = FCN(taps, FCNHead(taps.channels[-1], num_classes), aux)
    return _finish(model, backbone, "fcn", bool(aux_loss), pretrained, strict)


def _finish(model: nn.Module, backbone: str, family: str, aux_loss: bool, pretrained: Any,
            strict: bool) -> nn.Module:
    model.aux_loss = aux_loss
    model.num_classes = _num_classes(model)
    model.output_stride = output_stride_of(model.backbone.body)
    # torchvision's segmentation references evaluate at 520 px, ImageNet-normalised
    set_model_info(model, ModelInfo(name=family, task="segmentation", family=family, backbone=backbone,
                                    num_classes=model.num_classes, input_size=(3, 520, 520), crop_pct=1.0))
    if pretrained is not None:
        from .convert import load_segmenter_weights
        load_segmenter_weights(model, pretrained, strict=strict)
    return model


def _num_classes(model: nn.Module) -> int:
    head = model.classifier
    last = head.low_classifier if hasattr(head, "low_classifier") else head[-1]  # LR-ASPP / DeepLab, FCN
    return int(last.out_channels)
