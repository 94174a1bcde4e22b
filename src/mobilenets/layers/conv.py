"""The one conv primitive: Conv2d -> norm -> activation (-> anti-alias pool)."""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn

from .activations import ActLike, get_act

NormLayer = Callable[[int], nn.Module]


def make_divisible(v: float, divisor: int = 8, min_value: Optional[int] = None,
                   round_limit: float = 0.9) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` (at least ``min_value``), adding one
    more ``divisor`` when rounding down lost more than 10% (the TF-slim rule every MobileNet
    checkpoint was trained with; TF-slim's ``_make_divisible``, used by the MobileNetV2 / V3 papers' code)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def same_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """Symmetric padding that keeps ``ceil(size / stride)`` outputs for odd kernels."""
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2


class ConvNormAct(nn.Module):
    """Conv2d, then normalization, then activation, then (optionally) an anti-aliasing pool.

    The conv has a bias only when there is no norm (DESIGN principle 3). When ``aa`` is given
    and ``stride > 1`` the conv runs at stride 1 and the pool does the downsampling after the
    activation (anti-aliased MobileNetV4 variants).

    Args:
        in_chs, out_chs: channels.
        kernel_size, stride, dilation, groups: as in ``nn.Conv2d``; padding is symmetric.
        norm: norm layer factory taking the channel count, or ``None`` for no norm.
        act: activation name / class / partial, or ``None``.
        aa: anti-aliasing layer name (``"avg"``, ``"blur"``, ``"blurpc"``) or ``None``.
        bias: force a conv bias (default: only when there is no norm).
    """

    #: shape facts for builders and tasks, not for TorchScript (which would compile properties)
    __jit_unused_properties__ = ['in_chs', 'out_chs']

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1,
                 dilation: int = 1, groups: int = 1, norm: Optional[NormLayer] = nn.BatchNorm2d,
                 act: ActLike = "relu", aa: Optional[str] = None, bias: Optional[bool] = None):
        super().__init__()
        from .aa import create_aa

        use_aa = aa is not None and stride > 1
        bias = norm is None if bias is None else bias
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=1 if use_aa else stride,
                              padding=same_padding(kernel_size, 1 if use_aa else stride, dilation),
                              dilation=dilation, groups=groups, bias=bias)
        self.bn = norm(out_chs) if norm is not None else nn.Identity()
        self.act = get_act(act, inplace=True)
        self.aa = create_aa(aa, out_chs, stride) if use_aa else nn.Identity()

    @property
    def in_chs(self) -> int:
        return self.conv.in_channels

    @property
    def out_chs(self) -> int:
        return self.conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aa(self.act(self.bn(self.conv(x))))
