"""The Mobile-Former model (Chen et al., CVPR 2022, https://arxiv.org/abs/2108.05895): a
:class:`~mobilenets.archs.mobileformer.MobileFormerSpec` in, a model with the library's
contract out (shared/DESIGN.md principle 4)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..blocks.mobileformer import (LiteBottleneck, MergedHead, MobileBottleneck, MobileDownsample,
                                   MobileFormerBlock, MobileToFormer)
from ..layers import ConvNormAct, make_divisible
from .mobilenet import check_input

if TYPE_CHECKING:  # the arch module imports this one to register its models
    from ..archs.mobileformer import MobileFormerRow, MobileFormerSpec

#: Name of the attribute that carries the tokens on the map :meth:`MobileFormer.forward_features`
#: returns (so ``forward_head(forward_features(x))`` works).
TOKENS_ATTR = "mobileformer_tokens"

Features = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]


class MobileFormerStage(nn.Sequential):
    """Blocks at one resolution; ``forward(x, tokens) -> (x, tokens)``. Token-free blocks
    (``takes_tokens = False``, the lite bottleneck) get the map only."""

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for blk in self:
            if blk.takes_tokens:
                x, tokens = blk(x, tokens)
            else:
                x = blk(x)
        return x, tokens


class MobileFormer(nn.Module):
    """Mobile-Former: a MobileNet and a token transformer in parallel, joined by two
    cross-attention bridges (paper section 3).

    Computation (official implementation, REFERENCE.md section 4): tokens = learned ``(M, d)``
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
                 norm_momentum: Optional[float] = None):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}")
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
        idx, in_chs, reduction = 0, spec.stem, 2
        points = [dict(module="stem", num_chs=spec.stem, reduction=2, stage=-1)]
        stages = []
        for si, stage in enumerate(spec.stages):
            blocks = []
            for row in stage:
                out = make_divisible(row.out * width_mult, divisor if idx > 0 else 4)
                dp = drop_path_rate * (idx + 1) / len(rows)
                blocks.append(self._build_row(row, in_chs, out, dp, norm))
                in_chs, idx = out, idx + 1
                reduction *= row.stride
            stages.append(MobileFormerStage(*blocks))
            points.append(dict(module=f"stages.{si}", num_chs=in_chs, reduction=reduction, stage=si))
        self.stages = nn.Sequential(*stages)
        # One feature level per resolution: the last point at each reduction.
        last_at = {p["reduction"]: p for p in points}
        self.feature_info = [dict(p) for p in points if last_at[p["reduction"]] is p]
        self.num_features = in_chs

        # The last Mobile->Former feeds the head's token (official `local_global`).
        self.to_former = MobileToFormer(in_chs, d, spec.bridge_heads, drop_path_rate)
        self.head = MergedHead(in_chs, d, spec.head_hidden, num_classes, spec.head_expand, spec.groups,
                               spec.drop_rate if drop_rate is None else drop_rate, norm)
        self.head.norm.eps, self.head.norm.momentum = eps, mom
        self.head_hidden_size = spec.head_hidden
        self._init_weights()

    def _build_row(self, row: MobileFormerRow, in_chs: int, out: int, drop_path: float,
                   norm) -> nn.Module:
        s = self.spec
        if row.kind == "lite":
            return LiteBottleneck(in_chs, out, int(row.expand), row.stride, s.groups, norm)
        if row.kind == "down":
            mobile = MobileDownsample(in_chs, out, s.token_dim, row.expand, row.expand2, row.stride,
                                      groups=s.groups, reduction=s.dyrelu_reduction,
                                      drop_path=drop_path, norm=norm)
        else:
            mobile = MobileBottleneck(in_chs, out, row.expand, s.token_dim, row.stride,
                                      groups=s.groups, reduction=s.dyrelu_reduction, norm=norm)
        return MobileFormerBlock(mobile, s.token_dim, s.bridge_heads, s.former_heads, s.ffn_expand,
                                 drop_path)

    def _init_weights(self) -> None:
        # The official initialisation: convs N(0, sqrt(2 / (k*k*out))) (He, fan-out), linears
        # N(0, 0.01) with zero bias, norms (1, 0), tokens N(0, 1) (nn.Embedding's default).
        nn.init.normal_(self.tokens, 0.0, 1.0)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.LayerNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # --- the model contract -------------------------------------------------------------
    def initial_tokens(self, batch_size: int) -> torch.Tensor:
        """The token table repeated to ``(batch_size, M, d)``.

        A copy, not an ``expand`` view: a view of a parameter made under ``torch.no_grad()``
        still claims ``requires_grad`` without a grad_fn, which breaks autograd-based tools
        (``FlopCounterMode``'s module tracker)."""
        return self.tokens.unsqueeze(0).repeat(batch_size, 1, 1)

    def forward_features(self, x: torch.Tensor, return_tokens: bool = False) -> Features:
        """Backbone output ``(N, num_features, H/32, W/32)``; with ``return_tokens=True``, the
        pair ``(map, tokens)``, tokens ``(N, M, d)`` after the final Mobile->Former (what the
        head reads).

        The merged head needs the tokens, so the map returned by default carries them as the
        attribute ``mobileformer_tokens``: ``forward_head(forward_features(x))`` works. A new
        tensor derived from the map (``clone()``, ``.to()``, slicing) does not carry them; pass
        the ``(map, tokens)`` pair then.
        """
        check_input(x, self.in_chans)
        tokens = self.initial_tokens(x.shape[0])
        x = self.stem(x)
        for stage in self.stages:
            x, tokens = stage(x, tokens)
        tokens = self.to_former(x, tokens)
        if return_tokens:
            return x, tokens
        setattr(x, TOKENS_ATTR, tokens)
        return x

    def forward_head(self, x: Features, pre_logits: bool = False) -> torch.Tensor:
        """The merged head on what :meth:`forward_features` returns: the ``(map, tokens)`` pair
        or the map carrying its tokens. ``pre_logits=True`` returns the ``head_hidden_size``
        vector.

        Raises:
            ValueError: a bare map without tokens.
        """
        if isinstance(x, (tuple, list)):
            x, tokens = x
        else:
            tokens = getattr(x, TOKENS_ATTR, None)
            if tokens is None:
                raise ValueError(
                    "Mobile-Former's head needs the tokens: pass forward_features(x, return_tokens=True) "
                    "(a (map, tokens) pair) or the map forward_features(x) returned, unchanged")
        return self.head(x, tokens, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, return_tokens=True))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final Linear with a fresh one (0: remove it)."""
        self.num_classes = num_classes
        self.head.reset(num_classes)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def _level_positions(self) -> list[int]:
        # feature level -> 0 (stem) or stage index + 1
        return [0 if f["module"] == "stem" else f["stage"] + 1 for f in self.feature_info]

    def stage_outputs(self, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """``[("stem", map), ("stages.0", map), ...]`` for one input (what ``stage_shapes`` prints)."""
        check_input(x, self.in_chans)
        tokens = self.initial_tokens(x.shape[0])
        x = self.stem(x)
        out = [("stem", x)]
        for i, stage in enumerate(self.stages):
            x, tokens = stage(x, tokens)
            out.append((f"stages.{i}", x))
        return out

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
        """Feature maps at the given feature levels (indices into ``feature_info``), shallow to
        deep; stops after the deepest requested level."""
        check_input(x, self.in_chans)
        pos = self._level_positions()
        take = sorted(pos[i] for i in indices)
        tokens = self.initial_tokens(x.shape[0])
        x = self.stem(x)
        outs = [x] if 0 in take else []
        for i, stage in enumerate(self.stages[: take[-1]], start=1):
            x, tokens = stage(x, tokens)
            if i in take:
                outs.append(x)
        return outs

    def prune_for_features(self, max_index: int) -> None:
        """Drop the head, the final Mobile->Former and the stages deeper than feature level
        ``max_index``."""
        keep = self._level_positions()[max_index]  # stem + stages[:keep] are needed
        self.stages = self.stages[:keep]
        self.to_former = None
        self.head = None

    def fuse(self) -> "MobileFormer":
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
