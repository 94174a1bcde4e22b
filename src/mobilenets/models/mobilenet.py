"""The one generic builder for MobileNet V1-V4: a :class:`NetSpec` in, a model out."""

from __future__ import annotations

from functools import partial
from typing import Optional, Sequence

import torch
import torch.nn as nn

from ..archs.spec import BlockSpec, HeadSpec, NetSpec
from ..blocks import (ConvBlock, DepthwiseSeparable, FusedIB, InvertedResidual, MobileMQA,
                      UniversalInvertedBottleneck)
from ..layers import ConvNormAct, get_act, make_divisible

MIN_INPUT_SIZE = 32


class ClassifierHead(nn.Module):
    """Global average pool -> [hidden Linear (+BN1d) + act] -> dropout -> Linear.

    V1/V2 have no hidden layer; V3 has Linear(960->1280, bias) + h-swish (the paper's
    "efficient last stage", section 5.1); V4 has Linear(960->1280, no bias) + BN + act.
    The hidden layer is a Linear on the pooled vector: the same math as a 1x1 conv on a 1x1 map.
    """

    def __init__(self, in_chs: int, num_classes: int, hidden: int = 0, norm: bool = False,
                 act: Optional[str] = None, drop_rate: float = 0.0, norm_eps: float = 1e-5,
                 norm_momentum: float = 0.1):
        super().__init__()
        self.in_chs = in_chs
        if hidden:
            self.hidden = nn.Linear(in_chs, hidden, bias=not norm)
            self.norm = nn.BatchNorm1d(hidden, eps=norm_eps, momentum=norm_momentum) if norm else nn.Identity()
            self.act = get_act(act, inplace=True)
        else:
            self.hidden = self.norm = self.act = nn.Identity()
        self.hidden_size = hidden or in_chs
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if isinstance(x, torch.fx.Proxy) or x.ndim == 4:  # (a traced input is the 4-D feature map)
            x = x.mean((2, 3))
        x = self.act(self.norm(self.hidden(x)))
        if pre_logits:
            return x
        return self.fc(self.drop(x))


def check_input(x: torch.Tensor, in_chans: int, min_size: int = MIN_INPUT_SIZE) -> None:
    """Raise ``ValueError`` naming the expected and given shape for a bad input batch."""
    if isinstance(x, torch.fx.Proxy):  # symbolic tracing (FX quantization): no shape to check
        return
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of shape (N, {in_chans}, H, W), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != in_chans or x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(
            f"expected input of shape (N, {in_chans}, H, W) with H, W >= {min_size}, "
            f"got {tuple(x.shape)}")


def _scaled(b: BlockSpec, width_mult: float) -> int:
    if b.width == "fixed":
        return b.out
    scaled = make_divisible(b.out * width_mult)
    return max(b.out, scaled) if b.width == "max" else scaled


def build_block(b: BlockSpec, in_chs: int, out_chs: int, stride: int, dilation: int,
                net: NetSpec, norm, drop_path: float) -> nn.Module:
    """Instantiate one block from its spec (channels already width-scaled)."""
    act = b.act or net.act
    # The shortcut follows the spec's stride: a block whose stride became a dilation
    # (output_stride < 32) keeps no shortcut, as in torchvision's dilated MobileNetV3.
    skip = b.stride == 1
    ls = net.layer_scale if b.kind in ("uir", "mqa") else None
    if b.kind == "cn":
        return ConvBlock(in_chs, out_chs, b.k, stride, dilation, norm=norm, act=act, aa=net.aa)
    if b.kind in ("ds", "dsa"):
        se = make_divisible(in_chs * b.se) if b.se else 0
        return DepthwiseSeparable(in_chs, out_chs, b.k, stride, dilation, se_chs=se,
                                  pw_act=b.kind == "dsa", skip=skip and b.kind == "ds", act=act, norm=norm,
                                  aa=net.aa, drop_path=drop_path)
    mid = make_divisible(in_chs * b.e)
    if b.kind == "ir":
        se = make_divisible(mid * b.se) if b.se else 0
        return InvertedResidual(in_chs, out_chs, mid, b.k, stride, dilation, se_chs=se, act=act,
                                norm=norm, aa=net.aa, skip=skip, drop_path=drop_path)
    if b.kind == "er":
        return FusedIB(in_chs, out_chs, mid, b.k, stride, dilation, act=act, norm=norm, aa=net.aa,
                       skip=skip, drop_path=drop_path)
    if b.kind == "uir":
        return UniversalInvertedBottleneck(in_chs, out_chs, mid, b.a, b.k, stride, dilation, act=act,
                                           norm=norm, aa=net.aa, skip=skip, drop_path=drop_path,
                                           layer_scale=ls)
    if b.kind == "mqa":
        return MobileMQA(in_chs, out_chs, b.heads, b.key_dim, b.key_dim, b.kv_stride, b.query_stride,
                         b.k, dilation, norm=norm, drop_path=drop_path, layer_scale=ls)
    raise ValueError(f"unknown block kind {b.kind!r}")  # pragma: no cover - BlockSpec validates


class MobileNet(nn.Module):
    """MobileNet V1-V4 from a :class:`NetSpec`.

    Args:
        spec: the architecture.
        num_classes: classifier outputs (0: no classifier, ``forward`` returns pooled features).
        in_chans: input channels.
        width_mult: channel multiplier (V1 paper's alpha) for every block; the stem keeps its
            width below ``spec.fix_stem_below``; the classifier hidden width never scales.
        drop_rate: dropout before the classifier (default: the spec's).
        drop_path_rate: stochastic depth, growing linearly to this rate over the blocks.
        output_stride: 32 (default), 16 or 8: later strides become dilations (segmentation).
        norm_eps, norm_momentum: BatchNorm settings (default: the spec's).
    """

    def __init__(self, spec: NetSpec, num_classes: int = 1000, in_chans: int = 3,
                 width_mult: float = 1.0, drop_rate: Optional[float] = None,
                 drop_path_rate: float = 0.0, output_stride: int = 32,
                 norm_eps: Optional[float] = None, norm_momentum: Optional[float] = None):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}")
        self.spec, self.num_classes, self.in_chans = spec, num_classes, in_chans
        self.width_mult, self.drop_path_rate, self.output_stride = width_mult, drop_path_rate, output_stride
        eps = spec.norm_eps if norm_eps is None else norm_eps
        mom = spec.norm_momentum if norm_momentum is None else norm_momentum
        norm = partial(nn.BatchNorm2d, eps=eps, momentum=mom)

        stem_chs = spec.stem if width_mult < spec.fix_stem_below else make_divisible(spec.stem * width_mult)
        self.stem = ConvNormAct(in_chans, stem_chs, 3, 2, norm=norm, act=spec.stem_act or spec.act)

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
                blocks.append(build_block(b, in_chs, out, stride, dilation, spec, norm,
                                          drop_path_rate * idx / total))
                in_chs, idx = out, idx + 1
            stages.append(nn.Sequential(*blocks))
            points.append(dict(module=f"stages.{si}", num_chs=in_chs, reduction=cur_stride, stage=si))
        self.stages = nn.Sequential(*stages)
        # One feature level per resolution: the last point at each reduction.
        last_at = {p["reduction"]: p for p in points}
        self.feature_info = [dict(p) for p in points if last_at[p["reduction"]] is p]
        self.num_features = in_chs
        self.head = ClassifierHead(in_chs, num_classes, spec.head.hidden, spec.head.norm,
                                   spec.head.act or spec.act,
                                   spec.drop_rate if drop_rate is None else drop_rate, eps, mom)
        self.head_hidden_size = self.head.hidden_size
        self._init_weights()

    def _init_weights(self) -> None:
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d):
                if ".attn." in f".{name}.":
                    continue  # attention projections keep their Xavier init
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # --- the model contract -------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone output before pooling: ``(N, num_features, H/32, W/32)``."""
        check_input(x, self.in_chans)
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool + classifier; ``pre_logits=True`` returns the ``head_hidden_size`` vector."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final Linear with a fresh one (0: remove it)."""
        self.num_classes = num_classes
        self.head.reset(num_classes)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def feature_modules(self) -> list[nn.Module]:
        """The sequence the feature levels index into: stem, then each stage."""
        return [self.stem, *self.stages]

    def _level_positions(self) -> list[int]:
        # feature level -> index into feature_modules() (0 = stem, i + 1 = stage i)
        return [0 if f["module"] == "stem" else f["stage"] + 1 for f in self.feature_info]

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
        """Feature maps at the given feature levels (indices into ``feature_info``), shallow
        to deep; stops after the deepest requested level."""
        check_input(x, self.in_chans)
        pos = self._level_positions()
        take = sorted(pos[i] for i in indices)
        outs = []
        for i, m in enumerate(self.feature_modules()[: take[-1] + 1]):
            x = m(x)
            if i in take:
                outs.append(x)
        return outs

    def prune_for_features(self, max_index: int) -> None:
        """Drop the classifier and the stages deeper than feature level ``max_index``."""
        keep = self._level_positions()[max_index]  # modules [0, keep] are needed
        self.stages = self.stages[:keep]
        self.head = None

    def fuse(self) -> "MobileNet":
        """Fold BatchNorms and drop inference no-ops in place (see :func:`mobilenets.deploy.fuse`)."""
        from ..deploy import fuse
        return fuse(self, inplace=True)

    def set_bn(self, eps: Optional[float] = None, momentum: Optional[float] = None) -> None:
        """Set eps / momentum of every BatchNorm (checkpoints from other sources expect theirs)."""
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                if eps is not None:
                    m.eps = eps
                if momentum is not None:
                    m.momentum = momentum


def register_spec(name: str, spec: NetSpec, width_mult: float = 1.0,
                  reference: Optional[dict] = None, **fixed) -> None:
    """Register ``name`` as ``MobileNet(spec, width_mult=..., **fixed)``; callers may override
    any keyword (``width_mult`` included) at ``create_model`` time."""
    from .registry import register

    defaults = {"width_mult": width_mult, **fixed}

    def build(**kw) -> MobileNet:
        return MobileNet(spec, **{**defaults, **kw})

    build.__doc__ = f"{name}: {spec.family} ({spec.paper}), width {width_mult}."
    register(name, spec.family, build, spec=spec, defaults=defaults, reference=reference)
