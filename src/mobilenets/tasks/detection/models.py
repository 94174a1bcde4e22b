"""SSDLite, Faster R-CNN FPN and RetinaNet FPN on any registered backbone, assembled from
torchvision's own detection pieces (``SSD``, ``SSDLiteHead``, ``DefaultBoxGenerator``,
``FasterRCNN``, ``AnchorGenerator``, ``RetinaNet``, ``FeaturePyramidNetwork``): anchors, box
coding, matching, losses and NMS are torchvision's.

On ``mobilenetv3_large_100`` each builder makes exactly torchvision's model
(``ssdlite320_mobilenet_v3_large``, ``fasterrcnn_mobilenet_v3_large_fpn``,
``fasterrcnn_mobilenet_v3_large_320_fpn``): the same modules, BatchNorm settings and defaults,
so torchvision's checkpoints (the COCO ones included) load and give the same detections
(``tests/test_detection.py``). The contract is torchvision's: ``model(list of CHW float
images in [0, 1])`` -> a list of ``{"boxes" (xyxy, pixels), "labels", "scores"}`` in eval; a
dict of losses in train mode with targets.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from functools import partial
from typing import Any, Optional

import torch
import torch.nn as nn

from ...layers import make_divisible
from ...models.info import ModelInfo, model_info, set_model_info
from ...models.registry import get_entry
from ..backbone import build_backbone
from .backbone import Taps, fpn_taps, freeze_layers, frozen_batchnorm, ssdlite_taps, stride_taps, units

SSDLITE_SIZE = (320, 320)
# torchvision's SSDLite builds every BatchNorm (backbone, extras, heads) with these
SSDLITE_BN = dict(eps=0.001, momentum=0.03)
# torchvision's inference defaults per detector (its builders' ``defaults``)
SSDLITE_DEFAULTS = dict(score_thresh=0.001, nms_thresh=0.55, detections_per_img=300, topk_candidates=300,
                        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
FRCNN_DEFAULTS = dict(rpn_score_thresh=0.05)
FRCNN_320_DEFAULTS = dict(min_size=320, max_size=640, rpn_pre_nms_top_n_test=150,
                          rpn_post_nms_top_n_test=150, rpn_score_thresh=0.05)
FPN_CHANNELS = 256
#: the shorter side torchvision's Faster R-CNN / RetinaNet resize their input to by default (``min_size``)
RCNN_MIN_SIZE = 800


def native_size(name: str, model_kwargs: Optional[dict] = None) -> int:
    """The image side a registered detector works at: SSDLite320's fixed 320, else the shorter
    side its transform resizes every image to (``min_size``: torchvision's 800; the ``_320_fpn``
    Faster R-CNNs 320, at most 640 on the longer side), ``model_kwargs``' ``min_size`` first.
    Training, prediction and export feed the detector images of this size (square), so nothing is
    computed at another resolution only to be resized inside the model."""
    entry = get_entry(name)
    if entry.task != "detection":
        raise ValueError(f"{name!r} is a {entry.task} model, not a detector")
    if entry.family == "ssdlite":
        return SSDLITE_SIZE[0]
    size = (model_kwargs or {}).get("min_size")
    if size is None:
        size = (FRCNN_320_DEFAULTS if entry.defaults.get("low_res") else {}).get("min_size", RCNN_MIN_SIZE)
    return int(max(size) if isinstance(size, (list, tuple)) else size)


def _freeze(body: nn.Module, is_trained: bool, value: Optional[int], default: Optional[int]) -> None:
    """torchvision's rule: without pretrained weights every layer trains (a given value is
    ignored with a warning); with weights, the last ``value`` units (default ``default``,
    ``None``: all) train."""
    n = len(units(body))
    if not is_trained:
        if value is not None and value != n:
            warnings.warn(f"trainable_backbone_layers={value} has no effect without pretrained or "
                          f"pretrained_backbone weights: every layer trains", stacklevel=3)
        return
    freeze_layers(body, value if value is not None else (n if default is None else default))


def ssdlite320(backbone: str, num_classes: int = 91, pretrained: Any = None, strict: bool = True,
               pretrained_backbone: Any = None, trainable_backbone_layers: Optional[int] = None,
               width_mult: Optional[float] = None, reduced_tail: Optional[bool] = None,
               backbone_kwargs: Optional[dict] = None, anchor_ratios: tuple[float, float] = (0.2, 0.95),
               **kwargs) -> nn.Module:
    """SSDLite at 320x320 (MobileNetV3 paper section 6.2; torchvision's
    ``ssdlite320_mobilenet_v3_large`` on MobileNetV3-Large) on ``backbone``.

    Args:
        backbone: a classification backbone name (``mobilenetv4_conv_small``, ...).
        num_classes: classes including the background (91: COCO, as torchvision).
        pretrained: a detection checkpoint (ours or torchvision's) to load.
        pretrained_backbone: a classification checkpoint for the backbone.
        trainable_backbone_layers: backbone units that train (default: all, as torchvision's
            SSDLite).
        width_mult: backbone width (default: the registered one); the extra layers scale too.
        reduced_tail: MobileNetV3 only: halve the last stage (default: when no backbone
            weights are given, as torchvision builds its COCO model).
        backbone_kwargs: more backbone options (``drop_path_rate``, ``output_stride``, ...).
        anchor_ratios: ``(min_ratio, max_ratio)`` of the default boxes over the six maps, as a
            fraction of 320 (torchvision's 0.2, 0.95: 64 to 304 px); lower the first for small
            objects (the digit-scenes recipe uses 0.1: 32 px).
        **kwargs: ``torchvision.models.detection.SSD`` options (``score_thresh``, ``nms_thresh``,
            ``detections_per_img``, ``topk_candidates``, ...; torchvision's SSDLite defaults).
    """
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssdlite import SSDLiteHead

    if "size" in kwargs:
        raise ValueError("SSDLite320's input size is fixed at 320x320; use fasterrcnn_*_fpn for other sizes")
    tail = {}
    if get_entry(backbone).family == "mobilenetv3":
        tail["reduced_tail"] = pretrained_backbone is None if reduced_tail is None else reduced_tail
    elif reduced_tail:
        raise ValueError(f"reduced_tail is a MobileNetV3 option; {backbone} has none")
    _check_options(SSD, kwargs)
    body = build_backbone(backbone, pretrained_backbone, width_mult, SSDLITE_BN["eps"], SSDLITE_BN["momentum"],
                     backbone_kwargs, **tail)
    if pretrained_backbone is None:
        _normal_init(body)
    _freeze(body, pretrained_backbone is not None or pretrained is not None, trainable_backbone_layers, None)
    features = SSDLiteFeatures(Taps(body, ssdlite_taps(body)), body.width_mult)
    norm = partial(nn.BatchNorm2d, **SSDLITE_BN)
    lo, hi = anchor_ratios
    if not 0 < lo < hi <= 1:
        raise ValueError(f"anchor_ratios must be (min, max) with 0 < min < max <= 1, got {tuple(anchor_ratios)}")
    anchors = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=lo, max_ratio=hi)
    head = SSDLiteHead(features.out_channels, anchors.num_anchors_per_location(), num_classes, norm)
    model = SSD(features, anchors, SSDLITE_SIZE, num_classes, head=head, **{**SSDLITE_DEFAULTS, **kwargs})
    return _finish(model, backbone, "ssdlite", pretrained, strict)


def _normal_init(module: nn.Module) -> None:
    # torchvision's SSDLite initialisation when training from scratch: N(0, 0.03) convs
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.03)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class SSDLiteFeatures(nn.Module):
    """SSDLite's six feature maps: the backbone's two (see
    :func:`~mobilenets.tasks.detection.backbone.ssdlite_taps`) and four extra blocks (1x1 to
    half the width, 3x3 depthwise stride 2, 1x1; BN + ReLU6 each) of 512, 256, 256, 128
    channels (x ``width_mult``, rounded to multiples of 8), torchvision's layout.

    ``forward(x)`` -> ``OrderedDict`` ``"0"``..``"5"``; ``forward_with_tokens(x)`` also returns
    Mobile-Former's global tokens (``None`` for the MobileNets) for heads that use them.
    """

    def __init__(self, taps: Taps, width_mult: float = 1.0):
        super().__init__()
        self.body = taps
        depth = [make_divisible(d * width_mult) if width_mult != 1.0 else d for d in (512, 256, 256, 128)]
        chs = [taps.channels[-1]] + depth
        self.extra = nn.ModuleList(_extra_block(chs[i], chs[i + 1]) for i in range(4))
        _normal_init(self.extra)
        self.out_channels = list(taps.channels) + depth

    def forward_with_tokens(self, x: torch.Tensor):
        maps, tokens = self.body.forward_with_tokens(x)
        out = list(maps.values())
        y = out[-1]
        for blk in self.extra:
            y = blk(y)
            out.append(y)
        return OrderedDict((str(i), m) for i, m in enumerate(out)), tokens

    def forward(self, x: torch.Tensor):
        return self.forward_with_tokens(x)[0]


def _extra_block(in_chs: int, out_chs: int) -> nn.Sequential:
    """torchvision's SSDLite extra block, as its ``Conv2dNormActivation`` children (so the
    checkpoint keys match): 1x1 -> 3x3 depthwise s2 -> 1x1, each + BN + ReLU6."""
    from torchvision.ops.misc import Conv2dNormActivation

    norm = partial(nn.BatchNorm2d, **SSDLITE_BN)
    mid = out_chs // 2
    return nn.Sequential(
        Conv2dNormActivation(in_chs, mid, 1, norm_layer=norm, activation_layer=nn.ReLU6),
        Conv2dNormActivation(mid, mid, 3, 2, groups=mid, norm_layer=norm, activation_layer=nn.ReLU6),
        Conv2dNormActivation(mid, out_chs, 1, norm_layer=norm, activation_layer=nn.ReLU6))


class BackboneFPN(nn.Module):
    """Tapped backbone maps -> torchvision's ``FeaturePyramidNetwork`` (256 channels) with an
    extra level block; ``out_channels`` as torchvision's ``BackboneWithFPN``."""

    def __init__(self, taps: Taps, extra_blocks: nn.Module, out_channels: int = FPN_CHANNELS):
        super().__init__()
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork

        self.body = taps
        self.fpn = FeaturePyramidNetwork(list(taps.channels), out_channels, extra_blocks=extra_blocks)
        self.out_channels = out_channels

    def forward_with_tokens(self, x: torch.Tensor):
        maps, tokens = self.body.forward_with_tokens(x)
        return self.fpn(maps), tokens

    def forward(self, x: torch.Tensor):
        return self.forward_with_tokens(x)[0]


def _fpn_backbone(backbone: str, taps_of, extra_blocks, pretrained: Any, pretrained_backbone: Any,
                  trainable_backbone_layers: Optional[int], width_mult: Optional[float],
                  frozen_bn: Optional[bool], backbone_kwargs: Optional[dict]) -> BackboneFPN:
    # torchvision builds its MobileNetV3 for detection with the norm layer's own eps (1e-5),
    # frozen (FrozenBatchNorm2d) when weights are loaded
    body = build_backbone(backbone, pretrained_backbone, width_mult, 1e-5, 0.1, backbone_kwargs)
    is_trained = pretrained_backbone is not None or pretrained is not None
    _freeze(body, is_trained, trainable_backbone_layers, 3)
    taps = Taps(body, taps_of(body))
    if is_trained if frozen_bn is None else frozen_bn:
        frozen_batchnorm(body)
    return BackboneFPN(taps, extra_blocks)


def fasterrcnn_fpn(backbone: str, num_classes: int = 91, pretrained: Any = None, strict: bool = True,
                   pretrained_backbone: Any = None, trainable_backbone_layers: Optional[int] = None,
                   width_mult: Optional[float] = None, frozen_bn: Optional[bool] = None,
                   low_res: bool = False, backbone_kwargs: Optional[dict] = None, **kwargs) -> nn.Module:
    """Faster R-CNN with a 256-channel FPN on the backbone's last two units (torchvision's
    ``fasterrcnn_mobilenet_v3_large_fpn``; ``low_res``: its ``_320_fpn`` variant, images
    resized to 320-640 px and 150 RPN proposals).

    Args:
        backbone: a classification backbone name.
        num_classes: classes including the background (91: COCO).
        pretrained: a detection checkpoint (ours or torchvision's) to load.
        pretrained_backbone: a classification checkpoint for the backbone.
        trainable_backbone_layers: backbone units that train (default 3 with weights, else all).
        width_mult: backbone width (default: the registered one).
        frozen_bn: backbone BatchNorm as torchvision's ``FrozenBatchNorm2d`` (default: when
            weights are loaded, as torchvision; its published parameter count assumes it).
        backbone_kwargs: more backbone options (``drop_path_rate``, ``output_stride``, ...).
        **kwargs: ``torchvision.models.detection.FasterRCNN`` options (``min_size``,
            ``box_score_thresh``, ``box_nms_thresh``, ``box_detections_per_img``,
            ``rpn_pre_nms_top_n_test``, ``rpn_post_nms_top_n_test``, ...).
    """
    from torchvision.models.detection.faster_rcnn import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    _check_options(FasterRCNN, kwargs)
    features = _fpn_backbone(backbone, fpn_taps, LastLevelMaxPool(), pretrained, pretrained_backbone,
                             trainable_backbone_layers, width_mult, frozen_bn, backbone_kwargs)
    sizes = ((32, 64, 128, 256, 512),) * 3
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    defaults = FRCNN_320_DEFAULTS if low_res else FRCNN_DEFAULTS
    model = FasterRCNN(features, num_classes, rpn_anchor_generator=anchors, **{**defaults, **kwargs})
    return _finish(model, backbone, "fasterrcnn", pretrained, strict)


def retinanet_fpn(backbone: str, num_classes: int = 91, pretrained: Any = None, strict: bool = True,
                  pretrained_backbone: Any = None, trainable_backbone_layers: Optional[int] = None,
                  width_mult: Optional[float] = None, frozen_bn: Optional[bool] = None,
                  backbone_kwargs: Optional[dict] = None, **kwargs) -> nn.Module:
    """RetinaNet (Lin et al. 2017; torchvision's ``retinanet_resnet50_fpn`` design) on the
    backbone's stride 8, 16 and 32 maps: a 256-channel FPN with P6/P7 from P5, torchvision's
    ``RetinaNetHead``, anchors and focal loss.

    Args: as :func:`fasterrcnn_fpn`; ``**kwargs`` go to ``torchvision.models.detection.RetinaNet``
        (``score_thresh``, ``nms_thresh``, ``detections_per_img``, ``min_size``, ...).
    """
    from torchvision.models.detection.retinanet import RetinaNet
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    _check_options(RetinaNet, kwargs)
    features = _fpn_backbone(backbone, stride_taps, LastLevelP6P7(FPN_CHANNELS, FPN_CHANNELS), pretrained,
                             pretrained_backbone, trainable_backbone_layers, width_mult, frozen_bn, backbone_kwargs)
    model = RetinaNet(features, num_classes, **kwargs)
    return _finish(model, backbone, "retinanet", pretrained, strict)


def _check_options(cls: type, kwargs: dict) -> dict:
    """``kwargs`` if every key is an option of torchvision's ``cls`` (or of its image transform,
    where its ``**kwargs`` go); torchvision would ignore a misspelt one silently."""
    import difflib
    import inspect

    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    known = {p for c in (cls, GeneralizedRCNNTransform) for p in inspect.signature(c.__init__).parameters}
    known -= {"self", "backbone", "num_classes", "kwargs", "head", "anchor_generator", "size"}
    for k in kwargs:
        if k not in known:
            close = difflib.get_close_matches(k, sorted(known), n=3)
            raise TypeError(f"unknown option {k!r} for {cls.__name__}"
                            + (f"; did you mean {', '.join(close)}?" if close else "")
                            + " (backbone options go in backbone_kwargs={...})")
    return kwargs


def _finish(model: nn.Module, backbone: str, family: str, pretrained: Any, strict: bool) -> nn.Module:
    model.num_classes = _num_classes(model)
    t = model.transform  # torchvision's: resizes to its min_size and normalises inside the model
    size = int(max(t.min_size))
    set_model_info(model, ModelInfo(name=family, task="detection", family=family, backbone=backbone,
                                    num_classes=model.num_classes, mean=tuple(t.image_mean), std=tuple(t.image_std),
                                    input_size=(3, size, size), crop_pct=1.0))
    model.register_forward_pre_hook(check_call, with_kwargs=True)
    if pretrained is not None:
        from .convert import load_detector_weights
        load_detector_weights(model, pretrained, strict=strict)
    return model


def check_call(model: nn.Module, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook of every detector: in train mode the detector computes its losses and
    needs targets; called without them (inference on a model still in train mode, the default
    after building), a ``ValueError`` says to call ``model.eval()`` first, instead of
    torchvision's assertion; SSDLite training on one image, instead of BatchNorm's complaint
    about its 1x1 maps, says it needs two."""
    if not model.training:
        return
    name = model_info(model).name
    targets = args[1] if len(args) > 1 else kwargs.get("targets")
    if targets is None:
        raise ValueError(f"{name} is in training mode, where it computes its losses from targets: call "
                         f"model.eval() for detections (model.eval(); model([image])), or pass targets for "
                         f"training (model(images, [{{'boxes': ..., 'labels': ...}}, ...]))")
    images = args[0] if args else kwargs.get("images")
    if model_info(model).family == "ssdlite" and len(images) < 2:
        raise ValueError(f"{name} trains on batches of at least 2 images (its last extra maps are 1x1 at "
                         f"320x320: BatchNorm needs more than one value per channel), got {len(images)}; "
                         f"for detections call model.eval() first")


def _num_classes(model: nn.Module) -> int:
    roi_heads = getattr(model, "roi_heads", None)
    if roi_heads is not None:  # Faster R-CNN
        return int(roi_heads.box_predictor.cls_score.out_features)
    cls = model.head.classification_head
    return int(getattr(cls, "num_classes", getattr(cls, "num_columns", 0)))  # RetinaNet / SSD
