"""The Mobile-Former model (Chen et al., CVPR 2022, https://arxiv.org/abs/2108.05895): a
:class:`~mobilenets.archs.mobileformer.MobileFormerSpec` in, a model with the library's
contract out (:class:`~.base.Backbone`)."""

from __future__ import annotations

from functools import partial
from typing import Optional, Union

import torch
import torch.nn as nn

from ..archs.mobileformer import MobileFormerRow, MobileFormerSpec
from ..blocks.mobileformer import (LiteBottleneck, MergedHead, MobileBottleneck, MobileDownsample,
                                   MobileFormerBlock, MobileToFormer)
from ..layers import ConvNormAct, make_divisible
from .base import Backbone, MapAndTokens, check_options, feature_levels, split_state

#: What :meth:`MobileFormer.forward_head` accepts: :class:`MapAndTokens` or any ``(map, tokens)`` pair.
Features = Union[MapAndTokens, tuple[torch.Tensor, torch.Tensor]]


class MobileFormerStage(nn.Sequential):
    """Blocks at one resolution; ``forward(x, tokens) -> (x, tokens)``. Token-free blocks
    (``takes_tokens = False``, the lite bottleneck) get the map only."""

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> MapAndTokens:
        state = MapAndTokens(x, tokens)
        for blk in self:
            state = run_block(blk, state)
        return state


def run_block(blk: nn.Module, state: MapAndTokens) -> MapAndTokens:
    """One Mobile-Former block on ``(map, tokens)``; token-free blocks get the map only."""
    if blk.takes_tokens:
        return MapAndTokens(*blk(state.map, state.tokens))
    return MapAndTokens(blk(state.map), state.tokens)


class MobileFormer(Backbone):
    """Mobile-Former: a MobileNet and a token transformer in parallel, joined by two
    cross-attention bridges (paper section 3).

    Computation (the official implementation, github.com/AAboys/MobileFormer ``mobile_former.py``): tokens = learned ``(M, d)``
    table broadcast over the batch; stem 3x3 s2 + BN + ReLU6; a token-free lite bottleneck;
    Mobile-Former blocks; one more Mobile->Former after the last block; the merged head
    (pooled map + first token).

    Args:
        spec: the variant (see :mod:`mobilenets.archs.mobileformer`).
        num_classes: classifier outputs (0: ``forward`` returns the ``head_hidden_size`` vector).
        in_chans: input channels.
        width_mult: channel multiplier of every block (official rule: the first row rounds to a
            multiple of 4, the others to 4, or 8 when ``width_mult > 1.01``; the stem, tokens and
            head hidden width keep their size).
        drop_rate: dropout before the classifier (default: the spec's, 0).
        drop_path_rate: stochastic depth, growing linearly over the rows to this rate (the final
            Mobile->Former gets the full rate), as the official code schedules it.
        norm_eps, norm_momentum: BatchNorm settings (default: PyTorch's, as the official code).
        output_stride: 32 (default, the paper's), 16 or 8: the later downsampling blocks run at
            stride 1 and their depthwise convs (and those of every later block) are dilated
            instead, as :class:`~mobilenets.models.MobileNet` does (segmentation heads; not in
            the paper, so no checkpoint was trained that way).
        global_pool: the head's pooling (timm's ``global_pool``): ``"avg"`` (the paper's),
            ``"max"``, ``"avgmax"``, or ``""`` (the head returns the map it would pool).

    Attributes:
        tokens: the learned ``(M, d)`` token table.
        feature_info: one level per resolution (reductions 2, 4, 8, 16, 32).
        num_features: channels of the final feature map. head_hidden_size: the head's hidden width.

    Stochastic depth draws one mask per sample everywhere; the official code's token updates
    draw it per token (its tokens are ``(M, N, d)``), which only changes training noise.
    """

    def __init__(self, spec: MobileFormerSpec, num_classes: int = 1000, in_chans: int = 3,
                 width_mult: float = 1.0, drop_rate: Optional[float] = None,
                 drop_path_rate: float = 0.0, norm_eps: Optional[float] = None,
                 norm_momentum: Optional[float] = None, output_stride: int = 32, global_pool: str = "avg"):
        super().__init__()
        check_options(width_mult, drop_path_rate, in_chans)
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.output_stride = output_stride
        self.spec, self.num_classes, self.in_chans = spec, num_classes, in_chans
        self.width_mult, self.drop_path_rate = width_mult, drop_path_rate
        eps = spec.norm_eps if norm_eps is None else norm_eps
        mom = spec.norm_momentum if norm_momentum is None else norm_momentum
        norm = partial(nn.BatchNorm2d, eps=eps, momentum=mom)
        d = spec.token_dim

        self.tokens = nn.Parameter(torch.empty(spec.num_tokens, d))
        self.stem = ConvNormAct(in_chans, spec.stem, 3, 2, norm=norm, act="relu6")

        rows = spec.rows()
        divisor = 8 if width_mult > 1.01 else 4
        idx, in_chs, reduction, dilation = 0, spec.stem, 2, 1
        points = [dict(module="stem", num_chs=spec.stem, reduction=2, stage=-1)]
        stages = []
        for si, stage in enumerate(spec.stages):
            blocks = []
            for row in stage:
                out = make_divisible(row.out * width_mult, divisor if idx > 0 else 4)
                dp = drop_path_rate * (idx + 1) / len(rows)
                stride = row.stride
                if stride > 1 and reduction * stride > output_stride:
                    dilation, stride = dilation * stride, 1  # as MobileNet (models/mobilenet.py)
                blocks.append(self._build_row(row, in_chs, out, dp, norm, stride, dilation))
                in_chs, idx = out, idx + 1
                reduction *= stride
            stages.append(MobileFormerStage(*blocks))
            points.append(dict(module=f"stages.{si}", num_chs=in_chs, reduction=reduction, stage=si))
        self.stages = nn.Sequential(*stages)
        self.feature_info = feature_levels(points)
        self.num_features = in_chs

        # The last Mobile->Former feeds the head's token (official `local_global`).
        self.to_former = MobileToFormer(in_chs, d, spec.bridge_heads, drop_path_rate)
        self.head = MergedHead(in_chs, d, spec.head_hidden, num_classes, spec.head_expand, spec.groups,
                               spec.drop_rate if drop_rate is None else drop_rate, norm, global_pool)
        self.head.norm.eps, self.head.norm.momentum = eps, mom
        self.head_hidden_size = spec.head_hidden
        self._init_weights()

    def _build_row(self, row: MobileFormerRow, in_chs: int, out: int, drop_path: float,
                   norm, stride: int, dilation: int) -> nn.Module:
        """One row; ``stride`` / ``dilation``: the row's after ``output_stride`` (the
        shortcut follows the row's own stride, as in the MobileNets)."""
        s = self.spec
        if row.kind == "lite":
            if dilation > 1:  # pragma: no cover - the lite row ends at stride <= 4
                raise ValueError("the lite bottleneck cannot be dilated")
            return LiteBottleneck(in_chs, out, int(row.expand), stride, s.groups, norm)
        if row.kind == "down":
            mobile = MobileDownsample(in_chs, out, s.token_dim, row.expand, row.expand2, stride,
                                      groups=s.groups, reduction=s.dyrelu_reduction,
                                      drop_path=drop_path, norm=norm, dilation=dilation)
        else:
            mobile = MobileBottleneck(in_chs, out, row.expand, s.token_dim, stride,
                                      groups=s.groups, reduction=s.dyrelu_reduction, norm=norm,
                                      dilation=dilation)
        return MobileFormerBlock(mobile, s.token_dim, s.bridge_heads, s.former_heads, s.ffn_expand,
                                 drop_path, skip=row.stride == 1 and in_chs == out)

    def _init_weights(self) -> None:
        # The official initialisation: convs N(0, sqrt(2 / (k*k*out))) (He, fan-out), linears
        # N(0, 0.01) with zero bias, norms (1, 0), tokens N(0, 1) (nn.Embedding's default).
        nn.init.normal_(self.tokens, 0.0, 1.0)
        super()._init_weights()

    # --- the model contract -------------------------------------------------------------
    def initial_tokens(self, batch_size: int) -> torch.Tensor:
        """The token table repeated to ``(batch_size, M, d)``.

        A copy, not an ``expand`` view: a view of a parameter made under ``torch.no_grad()``
        still claims ``requires_grad`` without a grad_fn, which breaks autograd-based tools
        (``FlopCounterMode``'s module tracker)."""
        return self.tokens.unsqueeze(0).repeat(batch_size, 1, 1)

    # --- the stage protocol (see models/base.py): the state is (map, tokens) -------------------
    def _begin(self, x: torch.Tensor) -> MapAndTokens:
        return MapAndTokens(self.stem(x), self.initial_tokens(x.shape[0]))

    def _run_stage(self, stage: nn.Module, state: MapAndTokens) -> MapAndTokens:
        return stage(state.map, state.tokens)

    def _run_block(self, block: nn.Module, state: MapAndTokens) -> MapAndTokens:
        return run_block(block, state)

    def _finish(self, state: MapAndTokens) -> MapAndTokens:
        # the final Mobile->Former feeds the head's token (gone once the head is pruned)
        if self.to_former is None:
            return state
        return MapAndTokens(state.map, self.to_former(state.map, state.tokens))

    def drop_head(self) -> None:
        self.to_former = None
        self.head = None

    def forward_features(self, x: torch.Tensor, return_tokens: bool = False) -> MapAndTokens:
        """Backbone output: :class:`~mobilenets.models.base.MapAndTokens` ``(map, tokens)``, the
        map ``(N, num_features, H/32, W/32)`` and the tokens ``(N, M, d)`` after the final
        Mobile->Former (what the head reads); ``forward_head(forward_features(x))`` works, and
        ``.shape`` is the map's.

        Args:
            x: ``(N, in_chans, H, W)`` input, H, W >= 32.
            return_tokens: kept for compatibility; the result always carries the tokens.
        """
        return super().forward_features(x)

    def forward_head(self, x: Features, pre_logits: bool = False) -> torch.Tensor:
        """The merged head on what :meth:`forward_features` returns (or any ``(map, tokens)``
        pair).

        Args:
            x: ``(map, tokens)``. pre_logits: return the ``head_hidden_size`` vector.

        Raises:
            ValueError: a bare map without tokens.
        """
        if not isinstance(self.head, MergedHead):  # pruned: a plain head on the map
            return self.head(split_state(x)[0], pre_logits=pre_logits)
        if not isinstance(x, (tuple, list)):
            raise ValueError(
                "Mobile-Former's head needs the tokens: pass what forward_features(x) returns "
                f"(a (map, tokens) pair), got a {type(x).__name__}")
        fmap, tokens = x
        return self.head(fmap, tokens, pre_logits=pre_logits)

    def __prepare_scriptable__(self):
        raise NotImplementedError(
            "torch.jit.script does not take Mobile-Former: its stages pass (map, tokens) pairs to blocks of two "
            "signatures (token-free lite bottlenecks and Mobile-Former blocks) chosen in Python. Deploy it with "
            "torch.export / torch.compile, or mobilenets.deploy (ONNX, ExecuTorch, LiteRT); timm has no Mobile-Former")

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter groups: the stem with the token table, one group per stage
        (``coarse``) or block; the final Mobile->Former and the head in the last."""
        groups = super().group_matcher(coarse)
        return dict(groups, stem=r"^stem|^tokens")

    def no_weight_decay(self) -> set:
        """The learned tokens train without weight decay (as transformers' class tokens)."""
        return {"tokens"}
