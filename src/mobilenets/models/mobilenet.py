"""The one generic builder for MobileNet V1-V4: a :class:`NetSpec` in, a model out."""

from __future__ import annotations

from functools import partial
from typing import Optional

import torch
import torch.nn as nn

from ..archs.spec import BlockSpec, NetSpec
from ..blocks import (ConvBlock, DepthwiseSeparable, FusedIB, InvertedResidual, MobileMQA,
                      UniversalInvertedBottleneck)
from ..layers import ConvNormAct, make_divisible
from ..layers.head import ClassifierHead, new_linear  # noqa: F401  (re-exported)
from .base import MIN_INPUT_SIZE, Backbone, check_input, check_options, feature_levels

__all__ = ["MIN_INPUT_SIZE", "ClassifierHead", "MobileNet", "build_block", "check_input", "new_linear"]

def _scaled(b: BlockSpec, width_mult: float) -> int:
    if b.width == "fixed":
        return b.out
    scaled = make_divisible(b.out * width_mult)
    return max(b.out, scaled) if b.width == "max" else scaled


def _se_chs(chs: int, ratio: float, net: NetSpec) -> int:
    """SE squeeze channels: ``make_divisible`` by ``net.se_divisor``, or plain ``round`` (1)."""
    if not ratio:
        return 0
    return round(chs * ratio) if net.se_divisor == 1 else make_divisible(chs * ratio, net.se_divisor)


def build_block(b: BlockSpec, in_chs: int, out_chs: int, stride: int, dilation: int,
                net: NetSpec, norm, drop_path: float) -> nn.Module:
    """Instantiate one block from its spec (channels already width-scaled)."""
    act = b.act or net.act
    se_act = net.se_act or act
    pad = net.pad_type
    # The shortcut follows the spec's stride: a block whose stride became a dilation
    # (output_stride < 32) keeps no shortcut, as in torchvision's dilated MobileNetV3.
    skip = b.stride == 1 and b.skip
    ls = net.layer_scale if b.kind in ("uir", "mqa") else None
    if b.kind == "cn":
        return ConvBlock(in_chs, out_chs, b.k, stride, dilation, norm=norm, act=act, aa=net.aa, pad_type=pad)
    if b.kind in ("ds", "dsa"):
        return DepthwiseSeparable(in_chs, out_chs, b.k, stride, dilation, se_chs=_se_chs(in_chs, b.se, net),
                                  pw_act=b.kind == "dsa", skip=skip and b.kind == "ds", act=act, norm=norm,
                                  aa=net.aa, drop_path=drop_path, se_act=se_act, pad_type=pad)
    mid = make_divisible(in_chs * b.e)
    if b.kind == "ir":
        return InvertedResidual(in_chs, out_chs, mid, b.k, stride, dilation, se_chs=_se_chs(mid, b.se, net),
                                act=act, norm=norm, aa=net.aa, skip=skip, drop_path=drop_path, se_act=se_act,
                                pad_type=pad)
    if b.kind == "er":
        return FusedIB(in_chs, out_chs, mid, b.k, stride, dilation, act=act, norm=norm, aa=net.aa,
                       skip=skip, drop_path=drop_path, group_size=b.gs, pad_type=pad)
    if b.kind == "uir":
        return UniversalInvertedBottleneck(in_chs, out_chs, mid, b.a, b.k, stride, dilation, act=act,
                                           norm=norm, aa=net.aa, skip=skip, drop_path=drop_path,
                                           layer_scale=ls, pad_type=pad)
    if b.kind == "mqa":
        if pad:
            raise ValueError(f"mqa block: pad_type {pad!r} is not supported (expected ''): "
                             "Mobile MQA has no TF-ported checkpoints")
        return MobileMQA(in_chs, out_chs, b.heads, b.key_dim, b.key_dim, b.kv_stride, b.query_stride,
                         b.k, dilation, norm=norm, drop_path=drop_path, layer_scale=ls)
    raise ValueError(f"unknown block kind {b.kind!r}")  # pragma: no cover - BlockSpec validates


class MobileNet(Backbone):
    """MobileNet V1-V4 from a :class:`NetSpec`.

    Args:
        spec: the architecture.
        num_classes: classifier outputs (0: no classifier, ``forward`` returns pooled features).
        in_chans: input channels.
        width_mult: channel multiplier (V1 paper's alpha) for every block (default: the spec's
            ``width_mult``); the stem keeps its width below ``spec.fix_stem_below``; the
            classifier hidden width never scales.
        drop_rate: dropout before the classifier (default: the spec's).
        drop_path_rate: stochastic depth, growing linearly to this rate over the blocks.
        output_stride: 32 (default), 16 or 8: later strides become dilations (segmentation).
        norm_eps, norm_momentum: BatchNorm settings (default: the spec's).
        global_pool: the head's pooling, timm's ``global_pool`` (``"avg"``, ``"max"``,
            ``"avgmax"``, ``"catavgmax"``, or ``""``: none, the head runs per position).
    """

    def __init__(self, spec: NetSpec, num_classes: int = 1000, in_chans: int = 3,
                 width_mult: Optional[float] = None, drop_rate: Optional[float] = None,
                 drop_path_rate: float = 0.0, output_stride: int = 32,
                 norm_eps: Optional[float] = None, norm_momentum: Optional[float] = None,
                 global_pool: str = "avg"):
        super().__init__()
        width_mult = spec.width_mult if width_mult is None else width_mult
        check_options(width_mult, drop_path_rate, in_chans)
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.spec, self.num_classes, self.in_chans = spec, num_classes, in_chans
        self.width_mult, self.drop_path_rate, self.output_stride = width_mult, drop_path_rate, output_stride
        eps = spec.norm_eps if norm_eps is None else norm_eps
        mom = spec.norm_momentum if norm_momentum is None else norm_momentum
        norm = partial(nn.BatchNorm2d, eps=eps, momentum=mom)

        stem_chs = spec.stem if width_mult < spec.fix_stem_below else make_divisible(spec.stem * width_mult)
        self.stem = ConvNormAct(in_chans, stem_chs, spec.stem_k, 2, norm=norm, act=spec.stem_act or spec.act,
                                pad_type=spec.pad_type)

        total = len(spec.blocks())
        idx, in_chs, cur_stride, dilation = 0, stem_chs, 2, 1
        points = [dict(module="stem", num_chs=stem_chs, reduction=2, stage=-1)]
        stages = []
        for si, stage in enumerate(spec.stages):
            blocks = []
            for b in stage:
                stride = b.stride
                if stride > 1:
                    if cur_stride * stride > output_stride:
                        # torchvision's dilated MobileNetV3 convention: the block that would
                        # downsample keeps stride 1 and already uses the larger dilation.
                        dilation *= stride
                        stride = 1
                    else:
                        cur_stride *= stride
                out = _scaled(b, width_mult)
                try:
                    blocks.append(build_block(b, in_chs, out, stride, dilation, spec, norm,
                                              drop_path_rate * idx / total))
                except ValueError as e:  # say where, and at which width
                    raise ValueError(f"block stages.{si}.{len(blocks)} at width_mult={width_mult}: {e}") from e
                in_chs, idx = out, idx + 1
            stages.append(nn.Sequential(*blocks))
            points.append(dict(module=f"stages.{si}", num_chs=in_chs, reduction=cur_stride, stage=si))
        self.stages = nn.Sequential(*stages)
        self.feature_info = feature_levels(points[:-1] if spec.last_stage_is_head else points)
        self.num_features = in_chs
        self.head = ClassifierHead(in_chs, num_classes, spec.head.hidden, spec.head.norm,
                                   spec.head.act or spec.act,
                                   spec.drop_rate if drop_rate is None else drop_rate, eps, mom, global_pool,
                                   bias=spec.head.bias)
        self.head_hidden_size = self.head.hidden_size
        self._init_weights()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool + classifier on the ``forward_features`` map.

        Args:
            x: ``(N, num_features, h, w)`` map. pre_logits: return the ``head_hidden_size`` vector.
        """
        return self.head(x, pre_logits=pre_logits)
