"""The one conv primitive: Conv2d -> norm -> activation (-> anti-alias pool)."""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

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


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> int:
    # TensorFlow's SAME: the total padding that gives ceil(size / stride) outputs. The ceiling
    # as (size + stride - 1) // stride: ONNX export traces ``//`` as a truncating Div, which
    # would turn -(-size // stride) into a floor for odd sizes
    return max(((size + stride - 1) // stride - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


class Conv2dSame(nn.Conv2d):
    """A Conv2d with TensorFlow's ``"SAME"`` padding: the total padding that keeps
    ``ceil(size / stride)`` outputs, computed from the input size at every call and split with
    the odd pixel at the bottom / right (TensorFlow's rule; timm's ``Conv2dSame``). Where that
    split is symmetric whatever the size (stride 1, odd kernel) a plain Conv2d with
    :func:`same_padding` is the same conv: :func:`use_same_padding` only swaps the others.
    Same parameters (and state dict) as the Conv2d it replaces; its own ``padding`` is 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        ph = _same_pad(x.shape[-2], kh, sh, dh)
        pw = _same_pad(x.shape[-1], kw, sw, dw)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _static_same(conv: nn.Conv2d) -> bool:
    return all(s == 1 and (d * (k - 1)) % 2 == 0
               for k, s, d in zip(conv.kernel_size, conv.stride, conv.dilation))


def use_same_padding(module: nn.Module) -> int:
    """In place: every Conv2d of ``module`` whose TensorFlow SAME padding depends on the input
    size (a stride > 1, or an even effective kernel) becomes a :class:`Conv2dSame`, its
    parameters kept; the others already pad the SAME way. Returns how many were swapped."""
    n = 0
    for name, child in list(module.named_children()):
        if type(child) is nn.Conv2d and not _static_same(child):
            same = Conv2dSame(child.in_channels, child.out_channels, child.kernel_size, child.stride, 0,
                              child.dilation, child.groups, child.bias is not None,
                              device=child.weight.device, dtype=child.weight.dtype)
            same.weight, same.bias = child.weight, child.bias
            setattr(module, name, same)
            n += 1
        else:
            n += use_same_padding(child)
    return n
