"""MobileNetV5 (Gemma 3n's vision encoder) on the shared :class:`Backbone` contract: the
MobileNet trunk (stem, stages of ``er`` / ``uir`` / ``mqa`` blocks, built by
:func:`~mobilenets.models.mobilenet.build_block` with RMSNorm) and the multi-scale fusion adapter
as its neck; see :mod:`mobilenets.archs.mobilenetv5`."""


from functools import partial
from typing import List, Any, Optional, Sequence

import torch
import torch.nn as nn

from ..archs.mobilenetv5 import MobileNetV5Spec
from ..blocks import MultiScaleFusionAdapter
from ..layers import ConvNormAct, RMSNorm2d, make_divisible, use_same_padding
from .base import Backbone, check_options, feature_levels
from .intermediates import take_indices
from .mobilenet import ClassifierHead, _scaled, build_block
from .state import Step

__all__ = ["MobileNetV5", "register_mobilenetv5"]


class MobileNetV5(Backbone):
    """MobileNetV5 from a :class:`~mobilenets.archs.mobilenetv5.MobileNetV5Spec`.

    ``forward_features`` is the MSFA's fused ``(N, 2048, 16, 16)`` map (whatever the input
    size); the classifier pools it and applies a Linear (timm's ``MobileNetV5``). An encoder spec
    (timm's ``MobileNetV5Encoder``) has no head: ``forward`` is ``forward_features``. The feature
    levels are the stem's and each stage's output (strides 2 ... 32), as in timm; pruning for
    features (``features_only``, ``prune_intermediate_layers``) removes the MSFA with the head, as
    timm does, and ``forward_features`` is then the last kept stage's map.

    Args:
        spec: the architecture.
        num_classes: classifier outputs (0: pooled features; must be 0 for an encoder).
        in_chans: input channels.
        width_mult: channel multiplier of the trunk (timm's ``channel_multiplier``); the stem
            keeps its width below 1.0 and the MSFA's output never scales.
        drop_rate: dropout before the classifier (default: the spec's, 0).
        drop_path_rate: stochastic depth, growing linearly to this rate over the blocks.
        norm_eps: RMSNorm eps (default: the spec's, 1e-6).
        global_pool: the head's pooling (timm's ``global_pool``; not for the encoder).
    """

    def __init__(self, spec: MobileNetV5Spec, num_classes: int = 1000, in_chans: int = 3,
                 width_mult: float = 1.0, drop_rate: Optional[float] = None, drop_path_rate: float = 0.0,
                 norm_eps: Optional[float] = None, global_pool: str = "avg"):
        super().__init__()
        check_options(width_mult, drop_path_rate, in_chans)
        net = spec.net
        self.spec, self.num_classes, self.in_chans = spec, num_classes, in_chans
        self.width_mult, self.drop_path_rate = width_mult, drop_path_rate
        norm = partial(RMSNorm2d, eps=net.norm_eps if norm_eps is None else norm_eps)

        stem_chs = net.stem if width_mult < net.fix_stem_below else make_divisible(net.stem * width_mult)
        self.stem = ConvNormAct(in_chans, stem_chs, 3, 2, norm=norm, act=net.stem_act or net.act,
                                bias=spec.stem_bias)
        total = len(net.blocks())
        idx, in_chs, reduction = 0, stem_chs, 2
        points = [dict(module="stem", num_chs=stem_chs, reduction=2, stage=-1)]
        stages = []
        for si, stage in enumerate(net.stages):
            blocks = []
            for b in stage:
                out = _scaled(b, width_mult)
                blocks.append(build_block(b, in_chs, out, b.stride, 1, net, norm, drop_path_rate * idx / total))
                in_chs, idx, reduction = out, idx + 1, reduction * b.stride
            stages.append(nn.Sequential(*blocks))
            points.append(dict(module=f"stages.{si}", num_chs=in_chs, reduction=reduction, stage=si))
        self.stages = nn.Sequential(*stages)
        self.feature_info = feature_levels(points)

        levels, _ = take_indices(len(self.feature_info), list(spec.msfa.levels))
        self.msfa_levels = tuple(levels)
        self._neck = [self._level_positions()[i] for i in levels]  # walk positions the MSFA reads
        m = spec.msfa
        self.msfa = MultiScaleFusionAdapter([self.feature_info[i]["num_chs"] for i in levels], m.out,
                                            m.resolution, m.expansion, m.interpolation, act=net.act, norm=norm)
        self.num_features = m.out
        if spec.encoder and not num_classes:  # the encoder: the MSFA's map (a classifier only when asked)
            self.head = None
            self.head_hidden_size = m.out
        else:
            self.head = ClassifierHead(m.out, num_classes, drop_rate=net.drop_rate if drop_rate is None else drop_rate,
                                       pool_type=global_pool)
            self.head_hidden_size = self.head.hidden_size
        if spec.padding == "same":
            use_same_padding(self)
        self._init_weights()

    # --- the Backbone hooks -----------------------------------------------------------------
    def _neck_positions(self) -> tuple[int, ...]:
        if self.msfa is None:
            return ()
        return tuple(self._neck)

    def _finish_steps(self, steps: Sequence[Step]) -> Any:
        if self.msfa is None:  # pruned for features: the last stage's map, as timm
            return steps[-1].state
        by_position = {s.position: s.state for s in steps}
        return self.msfa([by_position[p] for p in self._neck_positions()])

    def drop_head(self) -> None:
        """Remove the classifier and the MSFA (it fuses the last levels into the head's input,
        as timm's pruning does): ``forward_features`` is then the last kept stage's map."""
        self.head = None
        self.msfa = None
        self._neck = []
        self.num_features = self.head_hidden_size = self.layer_shapes()[-1][0]  # the last kept map (the stem)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool + classifier on the ``forward_features`` map; without a head (an encoder, or a
        pruned model) the map itself, as timm's encoder's ``forward``.

        Args:
            x: ``(N, num_features, h, w)`` map. pre_logits: return the pooled vector.
        """
        if self.head is None:
            return x
        return self.head(x, pre_logits=pre_logits)

    def _scripted_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        taps: List[torch.Tensor] = []
        i = 1
        for stage in self.stages:
            x = stage(x)
            if i in self._neck:
                taps.append(x)
            i += 1
        if self.msfa is None:
            return x
        return self.msfa(taps)

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the final Linear (see :meth:`Backbone.reset_classifier`); the encoder has
        none: ``num_classes=0`` leaves it so, more classes give it a pooled classifier on the
        MSFA's map (as ``num_classes=`` at creation)."""
        if self.head is None and self.spec.encoder:
            if not num_classes and not global_pool:
                return
            ref = next(p for p in self.parameters() if p.is_floating_point())
            self.head = ClassifierHead(self.num_features, 0, pool_type=global_pool or "avg").to(ref.device, ref.dtype)
            self.head.train(self.training)
        super().reset_classifier(num_classes, global_pool)

    def get_classifier(self) -> nn.Module:
        """The final Linear (``nn.Identity`` without one)."""
        return nn.Identity() if self.head is None else self.head.fc


def register_mobilenetv5(spec: MobileNetV5Spec, reference: Optional[dict] = None) -> None:
    """Register ``spec.name`` as ``MobileNetV5(spec, ...)``, built with ``spec.default_classes``
    classes unless ``num_classes`` is given."""
    from .registry import keyword_options, register

    defaults = {"num_classes": spec.default_classes}

    def build(**kw) -> MobileNetV5:
        return MobileNetV5(spec, **{**defaults, **kw})

    build.__doc__ = f"{spec.name}: {spec.family} ({spec.paper})" + (", encoder" if spec.encoder else "") + "."
    register(spec.name, spec.family, build, spec=spec, defaults=defaults, reference=reference,
             options=keyword_options(MobileNetV5))
