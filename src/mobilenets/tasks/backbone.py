"""Our backbones as the bodies of task models (detection, segmentation): the layers a head
reads (taps), which layers train, BatchNorm frozen as torchvision freezes it, and the
classification backbone a task model starts from.

Every family is read through the one backbone protocol (:class:`mobilenets.models.Backbone`):
:meth:`~mobilenets.models.Backbone.walk` block by block (Mobile-Former's tokens travel along),
asking for a block's pre-stride map where a tap reads it, and
:meth:`~mobilenets.models.Backbone.layer_shapes` for the channels and strides of the taps.
No family-specific branches.

Units (torchvision's ``stage_indices`` for MobileNetV2/V3, defined for every family): the stem,
each block that downsamples, and the last block. ``trainable_backbone_layers=k`` trains the
last ``k`` units and everything after them, as torchvision's ``_mobilenet_extractor`` does.
Where each task reads the units: :mod:`.detection.backbone`, :mod:`.segmentation.backbone`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from ..models.base import Backbone
from ..models.registry import get_entry
from ..models.state import split_state


def units(backbone: Backbone) -> list[int]:
    """torchvision's ``stage_indices`` in our flattened index space (0 = stem, i = block i-1):
    the stem, every downsampling block, the last block."""
    blocks = backbone.blocks()
    strided = [i + 1 for i, (_, b) in enumerate(blocks) if _stride(b) > 1]
    return sorted({0, *strided, len(blocks)})


def _stride(block: nn.Module) -> int:
    s = getattr(block, "stride", 1)
    if isinstance(s, tuple):
        s = s[0]
    mobile = getattr(block, "mobile", None)  # Mobile-Former blocks: the stride of their Mobile part
    if mobile is not None:
        s = max(s, getattr(mobile, "stride", 1))
    return int(s)


def freeze_layers(backbone: Backbone, trainable_layers: int) -> None:
    """Freeze (``requires_grad=False``) every parameter before the last ``trainable_layers``
    units (0: the whole backbone), as torchvision's ``_mobilenet_extractor``.

    Raises:
        ValueError: ``trainable_layers`` outside ``0..len(units)``.
    """
    idx = units(backbone)
    if not 0 <= trainable_layers <= len(idx):
        raise ValueError(f"trainable_backbone_layers must be in 0..{len(idx)} for this backbone "
                         f"({len(idx)} units: stem, {len(idx) - 2} downsampling blocks, last block), "
                         f"got {trainable_layers}")
    layers = [backbone.stem] + [b for _, b in backbone.blocks()]
    freeze_before = len(layers) if trainable_layers == 0 else idx[len(idx) - trainable_layers]
    for m in layers[:freeze_before]:
        for p in m.parameters():
            p.requires_grad_(False)
    if freeze_before > 0 and isinstance(getattr(backbone, "tokens", None), nn.Parameter):
        backbone.tokens.requires_grad_(False)  # Mobile-Former's token table enters at the stem


def frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` under ``module`` by torchvision's ``FrozenBatchNorm2d`` with
    the same statistics, affine parameters and eps (what torchvision's detectors do to a
    pretrained backbone: the statistics of small detection batches would be worse)."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                frozen.weight.copy_(child.weight)
                frozen.bias.copy_(child.bias)
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            frozen_batchnorm(child)
    return module


class Taps(nn.Module):
    """Runs a backbone and returns the maps at chosen points, as an ``OrderedDict`` named
    ``"0", "1", ...`` (what torchvision's detection necks and heads take) or ``names``
    (torchvision's segmentation heads read ``"low"`` / ``"high"``, ``"out"`` / ``"aux"``), plus
    the tokens.

    A tap is ``(kind, i)`` in the flattened index space of :func:`units` (0 = the stem, i =
    block i-1): ``("out", i)`` that layer's output map, ``("pre_stride", i)`` block i-1's
    expanded map before its stride (it must :meth:`expands_before_stride`; SSDLite's "C4
    expansion", not timm's ``feature_location="expansion"``, which is the map before a block's
    projection). Only the layers up to the deepest
    tap run; the backbone's classifier and later blocks are removed.

    Args:
        backbone: any registered classification backbone (V1-V4, Mobile-Former).
        taps: the points, shallow to deep.
        names: the keys of the returned maps (default ``"0", "1", ...``).

    Attributes:
        channels: channels of each tapped map. strides: its reduction of the input (both
            known at construction: :meth:`output_shape`).
    """

    def __init__(self, backbone: Backbone, taps: Sequence[tuple[str, int]],
                 names: Optional[Sequence[str]] = None):
        super().__init__()
        blocks = backbone.blocks()
        self.names = [str(n) for n in (names if names is not None else range(len(taps)))]
        if len(self.names) != len(taps) or len(set(self.names)) != len(taps):
            raise ValueError(f"names must be {len(taps)} distinct keys, one per tap, got {list(self.names)}")
        last = max(i for _, i in taps)
        for kind, i in taps:
            if kind not in ("out", "pre_stride"):
                raise ValueError(f"tap kind must be 'out' or 'pre_stride', got {kind!r}")
            if kind == "pre_stride" and not (i > 0 and blocks[i - 1][1].expands_before_stride()):
                raise ValueError(f"block {i - 1} ({type(blocks[i - 1][1]).__name__}) has no expansion "
                                 f"before its stride to tap")
        self.taps = [tuple(t) for t in taps]
        self._at: dict[int, list[tuple[int, str]]] = {}  # layer index -> (output position, kind)
        for n, (kind, i) in enumerate(self.taps):
            self._at.setdefault(i, []).append((n, kind))
        # keep only what runs: the stem and the blocks up to the deepest tap (module paths, and
        # so checkpoint keys, stay those of the classification backbone)
        backbone.drop_head()
        if last == 0:
            backbone.stages = nn.Sequential()
        else:
            si, bi = (int(p) for p in blocks[last - 1][0].split(".")[1:])
            backbone.stages = nn.Sequential(*backbone.stages[:si], backbone.stages[si][: bi + 1])
        self.body = backbone
        shapes = backbone.layer_shapes()
        #: channels and stride (reduction) of each tapped map, from the blocks' configuration
        self.channels = [blocks[i - 1][1].pre_stride_chs if kind == "pre_stride" else shapes[i][0]
                         for kind, i in self.taps]
        self.strides = [shapes[i - 1][1] if kind == "pre_stride" else shapes[i][1] for kind, i in self.taps]

    def forward_with_tokens(self, x: torch.Tensor) -> tuple[OrderedDict, Optional[torch.Tensor]]:
        """``(maps, tokens)``: the tapped maps and, for Mobile-Former, the global tokens after
        the deepest tapped block (``None`` for the MobileNets); a head may use or ignore them."""
        pre = {i for i, kinds in self._at.items() if any(k == "pre_stride" for _, k in kinds)}
        out: dict[int, torch.Tensor] = {}
        steps = self.body.walk(x, blocks=True, keep=set(self._at), pre_stride=pre)
        for step in steps:
            for n, kind in self._at.get(step.position, []):
                out[n] = step.pre_stride if kind == "pre_stride" else split_state(step.state)[0]
        tokens = split_state(steps[-1].state)[1]
        return OrderedDict((self.names[n], out[n]) for n in range(len(self.taps))), tokens

    def forward(self, x: torch.Tensor) -> OrderedDict:
        return self.forward_with_tokens(x)[0]

    def output_shape(self) -> OrderedDict:
        """``name -> (channels, stride)`` of every tapped map, known without running anything
        (detectron2's ``output_shape()``)."""
        return OrderedDict((n, (c, s)) for n, c, s in zip(self.names, self.channels, self.strides))


def build_backbone(name: str, pretrained_backbone: Any = None, width_mult: Optional[float] = None,
                   norm_eps: Optional[float] = None, norm_momentum: Optional[float] = None,
                   backbone_kwargs: Optional[dict] = None, **kwargs) -> Backbone:
    """The classification backbone ``name`` without classifier, as a task model's body.

    Args:
        name: a classification backbone (``mobilenetv4_conv_small``, ...).
        pretrained_backbone: a classification checkpoint (e.g. the main job's ``best.pt``, or a
            timm / torchvision file; its classifier may have any class count): every backbone
            weight must be in it, with its shape.
        width_mult: the backbone width (default: the registered one).
        norm_eps, norm_momentum: BatchNorm settings the task model trains with (torchvision's
            detectors set theirs, also after loading weights); ``None``: the family's own, or
            the checkpoint's.
        backbone_kwargs, **kwargs: more ``create_model`` options (``output_stride``,
            ``drop_path_rate``, ...).

    Raises:
        ValueError: ``name`` is not a classification backbone.
        CheckpointError: ``pretrained_backbone`` lacks backbone weights or has other shapes.
    """
    from ..factory import create_model
    from ..weights import CheckpointError, load_weights

    entry = get_entry(name)
    if entry.task != "classification":
        raise ValueError(f"backbone {name!r} is a {entry.task} model; expected a classification backbone")
    kwargs.update(backbone_kwargs or {})
    if width_mult is not None:
        kwargs["width_mult"] = width_mult
    norm = {k: v for k, v in (("norm_eps", norm_eps), ("norm_momentum", norm_momentum)) if v is not None}
    model = create_model(name, num_classes=0, **norm, **kwargs)
    if pretrained_backbone is not None:
        report = load_weights(model, pretrained_backbone, strict=False)
        bad = report.missing + report.mismatched
        if bad:
            raise CheckpointError(f"{pretrained_backbone}: not a checkpoint of the backbone {name}: "
                                  f"{len(report.missing)} weights missing, {len(report.mismatched)} "
                                  f"mis-shaped (e.g. {bad[:4]})")
        model.set_bn(norm_eps, norm_momentum)
    return model
