"""The one conv primitive: Conv2d -> norm -> activation (-> anti-alias pool)."""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .activations import ActLike, get_act

NormLayer = Callable[[int], nn.Module]

#: Padding types of :class:`ConvNormAct`: ``""`` symmetric ``same_padding`` (PyTorch /
#: torchvision / timm convention), ``"same"`` TensorFlow's ``padding="SAME"``.
PAD_TYPES = ("", "same")


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


def tf_same_pad(size: int, kernel_size: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow ``padding="SAME"`` along one dimension: the (before, after) zero padding that
    gives ``ceil(size / stride)`` outputs, the odd pixel going *after* (TensorFlow's
    documented rule: ``pad_along = max((out - 1) * stride + k_eff - size, 0)``, ``pad_before =
    pad_along // 2``; the TF-ported checkpoints were trained with it). Integer arithmetic
    only, so sizes that are symbolic under ``torch.export`` work too."""
    # (ceil(size / stride) - 1) * stride + effective kernel - size, written with one modulo so
    # a symbolic size (torch.export with dynamic H / W) stays a simple expression; it is >= 0
    # whenever the effective kernel is at least the stride, the only case that needs max().
    eff = (kernel_size - 1) * dilation + 1
    total = eff - 1 - (size - 1) % stride
    if eff < stride:
        total = max(total, 0)
    return total // 2, total - total // 2


def is_static_same(kernel_size: int, stride: int, dilation: int = 1) -> bool:
    """Whether TF "SAME" padding is the same at every input size, and symmetric: stride 1 with
    an odd effective kernel (then it equals :func:`same_padding`)."""
    return stride == 1 and (dilation * (kernel_size - 1)) % 2 == 0


def pad_same(x: torch.Tensor, kernel_size: tuple[int, int], stride: tuple[int, int],
             dilation: tuple[int, int]) -> torch.Tensor:
    """Zero-pad an ``(N, C, H, W)`` map for a TF "SAME" conv (:func:`tf_same_pad` per dim).

    No branch on the sizes (a pad of 0 is a copy), so ``torch.export`` with symbolic H / W
    keeps one graph for every size. ``torch.fx.wrap``-ed: a leaf under FX symbolic tracing
    (the amounts come from the input shape)."""
    top, bottom = tf_same_pad(x.shape[-2], kernel_size[0], stride[0], dilation[0])
    left, right = tf_same_pad(x.shape[-1], kernel_size[1], stride[1], dilation[1])
    return F.pad(x, (left, right, top, bottom))


torch.fx.wrap("pad_same")


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding computed from each input's size: at
    stride 2 on an even size the extra row / column is padded at the bottom / right only,
    which symmetric padding cannot express (the TF-ported checkpoints of timm's
    ``tf_mobilenetv3_*``, whose ``Conv2dSame`` computes the same padding). Same parameters
    and state dict as ``nn.Conv2d``; ``padding`` is 0 (the padding happens in ``forward``)."""

    def __init__(self, *args, **kwargs):
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(pad_same(x, self.kernel_size, self.stride, self.dilation), self.weight, self.bias)


def create_conv2d(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                  groups: int = 1, bias: bool = True, pad_type: str = "") -> nn.Conv2d:
    """A conv with ``pad_type`` padding (see :data:`PAD_TYPES`): an ``nn.Conv2d`` with static
    symmetric padding wherever that is exact (always for ``""``; for ``"same"`` at stride 1
    with odd kernels), else a :class:`Conv2dSame`."""
    if pad_type not in PAD_TYPES:
        raise ValueError(f"unknown pad_type {pad_type!r}; expected one of {PAD_TYPES}")
    kw = dict(stride=stride, dilation=dilation, groups=groups, bias=bias)
    if pad_type == "same" and not is_static_same(kernel_size, stride, dilation):
        return Conv2dSame(in_chs, out_chs, kernel_size, **kw)
    return nn.Conv2d(in_chs, out_chs, kernel_size, padding=same_padding(kernel_size, stride, dilation), **kw)


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
        pad_type: ``""`` symmetric padding, ``"same"`` TensorFlow "SAME" padding (see
            :func:`create_conv2d`; TF-ported checkpoints).
    """

    #: shape facts for builders and tasks, not for TorchScript (which would compile properties)
    __jit_unused_properties__ = ['in_chs', 'out_chs']

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1,
                 dilation: int = 1, groups: int = 1, norm: Optional[NormLayer] = nn.BatchNorm2d,
                 act: ActLike = "relu", aa: Optional[str] = None, bias: Optional[bool] = None,
                 pad_type: str = ""):
        super().__init__()
        from .aa import create_aa

        use_aa = aa is not None and stride > 1
        bias = norm is None if bias is None else bias
        self.conv = create_conv2d(in_chs, out_chs, kernel_size, 1 if use_aa else stride, dilation, groups,
                                  bias, pad_type)
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


def use_same_padding(module: nn.Module) -> int:
    """In place: every Conv2d of ``module`` whose TensorFlow SAME padding depends on the input
    size (a stride > 1, or an even effective kernel) becomes a :class:`Conv2dSame`, its
    parameters kept; the others already pad the SAME way. Returns how many were swapped."""
    n = 0
    for name, child in list(module.named_children()):
        static = all(is_static_same(k, st, d) for k, st, d in zip(child.kernel_size, child.stride, child.dilation)) \
            if type(child) is nn.Conv2d else True
        if not static:
            same = Conv2dSame(child.in_channels, child.out_channels, child.kernel_size, stride=child.stride,
                              dilation=child.dilation, groups=child.groups, bias=child.bias is not None,
                              device=child.weight.device, dtype=child.weight.dtype)
            same.weight, same.bias = child.weight, child.bias
            setattr(module, name, same)
            n += 1
        else:
            n += use_same_padding(child)
    return n
