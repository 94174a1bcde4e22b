"""The supernet's sliced layers: ordinary library modules (``ConvNormAct``, ``ConvBlock``,
``UniversalInvertedBottleneck``, ``MobileMQA``, ``ClassifierHead``) built at the largest
widths of a search space, run on a leading slice of their weights.

Every channel dimension is sliced from the front (``weight[:out, :in]``), every kernel from its
centre (a 3x3 is the centre of the 5x5, as Once-for-All's elastic kernel, Cai et al. 2020,
https://arxiv.org/abs/1908.09791), so the weights of one sampled architecture are the leading
block of each shared tensor and :func:`copy_sliced` hands them to a standalone model by its
tensor shapes alone. Why slicing rather than TuNAS's masking: :mod:`.supernet`.

BatchNorm runs on the channels it is given (:func:`batch_norm`): its affine weights and
running statistics are sliced the same way; in training mode it normalises with the batch's
statistics, so training never reads the running ones, which mix every path and are only made
right for one path by :meth:`.supernet.Supernet.recalibrate_bn`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..blocks import ConvBlock, MobileMQA, UniversalInvertedBottleneck
from ..layers import ConvNormAct, LayerScale, make_divisible
from ..layers.conv import NormLayer, same_padding
from ..layers.head import ClassifierHead
from .controller import ALL

__all__ = ["SlotPath", "BlockSlot", "SlicedConvBlock", "SlicedHead", "batch_norm", "conv_norm_act",
           "copy_sliced"]


def batch_norm(bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``bn`` (a ``BatchNorm2d`` built for at least ``x``'s channels) on the leading ``C``
    channels of ``x``: affine weights and running statistics sliced to ``[:C]``.

    In training mode the batch's statistics normalise ``x`` and the running ones are updated
    in place through the slice, as ``nn.BatchNorm2d`` does (``momentum=None``: the cumulative
    average over ``num_batches_tracked`` batches, which :meth:`Supernet.recalibrate_bn` uses);
    in eval mode the sliced running statistics normalise it."""
    c = x.shape[1]
    factor = 0.0
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
                        bn.training, factor, bn.eps)


def conv_norm_act(m: ConvNormAct, x: torch.Tensor, out: Optional[int] = None, k: Optional[int] = None,
                  stride: Optional[int] = None) -> torch.Tensor:
    """``m`` on ``x`` with its weights sliced: input channels to ``x``'s, output channels to
    ``out`` (a depthwise conv keeps its input's), the kernel to its centre ``k`` x ``k``
    (default: ``m``'s own out / kernel / stride). Padding as ``m``'s (symmetric, ``k // 2``)."""
    conv, c = m.conv, x.shape[1]
    w = conv.weight
    if conv.groups == 1:
        w = w[:out or w.shape[0], :c]
    else:  # depthwise: one filter per input channel
        w, out = w[:c], c
    big = w.shape[-1]
    k = k or big
    if k < big:
        off = (big - k) // 2
        w = w[..., off:off + k, off:off + k]
    s = stride or conv.stride[0]
    y = F.conv2d(x, w, None, s, same_padding(k, s), 1, c if conv.groups > 1 else 1)
    return m.act(batch_norm(m.bn, y))


def _layer_scale(ls: nn.Module, y: torch.Tensor) -> torch.Tensor:
    if isinstance(ls, LayerScale):
        return y * ls.gamma[:y.shape[1]].view(1, -1, 1, 1)
    return y


@torch.no_grad()
def copy_sliced(dst: nn.Module, src: nn.Module) -> None:
    """Copy ``src``'s weights into ``dst``, a module of the same class and key layout with
    smaller (or equal) tensors: each tensor of ``dst`` gets the leading slice of ``src``'s (the
    centre of a conv kernel), the slice :func:`conv_norm_act` and :func:`batch_norm` run.

    Raises:
        ValueError: a key of ``dst`` that ``src`` lacks, or a ``dst`` tensor larger than ``src``'s.
    """
    theirs = src.state_dict()
    for key, t in dst.state_dict().items():
        if key not in theirs or t.ndim != theirs[key].ndim:
            raise ValueError(f"copy_sliced: {type(dst).__name__} key {key!r} {tuple(t.shape)} has no counterpart "
                             f"in the supernet's {type(src).__name__} (keys {sorted(theirs)[:6]}...)")
        s = theirs[key]
        if any(a > b for a, b in zip(t.shape, s.shape)):
            raise ValueError(f"copy_sliced: {key} needs {tuple(t.shape)}, the supernet holds only {tuple(s.shape)}")
        index = [slice(0, n) for n in t.shape]
        if t.ndim == 4:  # conv kernel: its centre
            index[2:] = [slice((b - n) // 2, (b - n) // 2 + n) for n, b in zip(t.shape[2:], s.shape[2:])]
        t.copy_(s[tuple(index)])


class SlicedConvBlock(ConvBlock):
    """A fixed ``cn`` block whose input width varies with the path (the frame's block after a
    searched stage, e.g. MobileNetV4's 1x1 conv to 960): built for the widest input, it
    slices its input channels to ``x``'s."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_norm_act(self, x)


class SlicedHead(ClassifierHead):
    """The classifier head, its first Linear sliced to the pooled width when that varies (a
    space whose last stage is searched). Global average pooling only (the supernet's)."""

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if x.shape[1] == self.in_chs:
            return super().forward(x, pre_logits)
        x = self.pool(x)
        c = x.shape[1]
        if self.has_hidden:
            x = self.act(self.norm(F.linear(x, self.hidden.weight[:, :c], self.hidden.bias)))
        if pre_logits or not isinstance(self.fc, nn.Linear):
            return x
        x = self.drop(x)
        return self.fc(x) if self.has_hidden else F.linear(x, self.fc.weight[:, :c], self.fc.bias)


@dataclass(frozen=True)
class SlotPath:
    """What a :class:`BlockSlot` runs: ``op`` a UIB form ``(start k, middle k)`` (0: absent),
    ``"mqa"`` or :data:`~.controller.ALL`; the expansion ``e``; the output width ``out``
    (already width-scaled); the block's ``stride``; ``skip``: the spec allows the identity
    shortcut (it is taken when the input width equals ``out`` too, as in ``ResidualBlock``)."""

    op: Union[tuple[int, int], str]
    e: float
    out: int
    stride: int = 1
    skip: bool = True


class BlockSlot(nn.Module):
    """One block position of a searched stage: the UIB every op choice shares and, where the
    stage offers it, a Mobile MQA, both sized for the largest widths.

    The UIB's pointwise expand / project are shared by every op (MobileNetV4 Sec. 4: the
    depthwise layers are the optional parts, the pointwise ones always run); its two depthwise
    slots (start, middle) hold one kernel each of the largest size the stage offers, the
    smaller kernels their centre. Expanded width: ``make_divisible(in * e)`` of the actual
    input, as ``build_block`` sizes it. :data:`~.controller.ALL` runs both depthwise slots at
    their largest kernel, and the MQA too where the slot has one (its branch added to the UIB's
    before the shortcut, TuNAS's all-ops mask summing the enabled ops), so one step trains every
    weight of the slot.

    Args:
        in_chs, out_chs, mid_chs: the largest input, output and expanded widths.
        start_k, mid_k: the largest start / middle depthwise kernel (0: the slot never has one).
        act, norm: the block's activation and norm factory. layer_scale: init of layer scale
            (``None``: off).
        mqa: ``(heads, key_dim, kv_stride, dw_kernel)`` of the Mobile MQA op, or ``None``.
        A slot with ``mid_chs`` 0 has no UIB (a fixed Mobile MQA block after a searched stage).
    """

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, start_k: int, mid_k: int, act: str, norm: NormLayer,
                 layer_scale: Optional[float] = None, mqa: Optional[tuple[int, int, int, int]] = None):
        super().__init__()
        # built at stride 1: the path's stride goes to whichever depthwise conv carries it
        self.uib = (UniversalInvertedBottleneck(in_chs, out_chs, mid_chs, start_k, mid_k, 1, act=act, norm=norm,
                                                layer_scale=layer_scale) if mid_chs else None)
        self.mqa = (MobileMQA(in_chs, out_chs, mqa[0], mqa[1], mqa[1], mqa[2], 1, mqa[3], norm=norm,
                              layer_scale=layer_scale) if mqa is not None else None)
        self.path: Optional[SlotPath] = None

    def source(self, kind: str) -> nn.Module:
        """The shared module a standalone block of ``kind`` (``uir`` / ``mqa``) takes its weights from."""
        if kind == "mqa" and self.mqa is not None:
            return self.mqa
        if kind == "uir" and self.uib is not None:
            return self.uib
        held = [k for k, m in (("uir", self.uib), ("mqa", self.mqa)) if m is not None]
        raise ValueError(f"block slot: holds {' and '.join(held)} weights, got a {kind} block")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.path
        if p is None:
            raise RuntimeError("block slot: no path set (Supernet.set_path sets one)")
        if p.op == "mqa":
            y = self._mqa(x, p.out)
        else:
            a, k = (self.uib.start_k, self.uib.mid_k) if p.op == ALL else p.op
            y = self._uib(x, a, k, make_divisible(x.shape[1] * p.e), p.out, p.stride)
            if p.op == ALL and self.mqa is not None:
                y = y + self._mqa(x, p.out)
        return y + x if p.skip and p.stride == 1 and x.shape[1] == p.out else y

    def _uib(self, x: torch.Tensor, a: int, k: int, mid: int, out: int, stride: int) -> torch.Tensor:
        u = self.uib
        # UniversalInvertedBottleneck: the stride sits on the middle depthwise if there is one
        if a:
            x = conv_norm_act(u.dw_start, x, k=a, stride=1 if k else stride)
        x = conv_norm_act(u.expand, x, out=mid)
        if k:
            x = conv_norm_act(u.dw_mid, x, k=k, stride=stride)
        return _layer_scale(u.layer_scale, conv_norm_act(u.project, x, out=out))

    def _mqa(self, x: torch.Tensor, out: int) -> torch.Tensor:
        """``MobileMQA.branch`` (norm -> ``MultiQueryAttention2d`` with query stride 1) on
        sliced weights: q / k / v read the leading ``C`` input channels, the output projection
        writes ``out``; heads and key / value dims are not searched."""
        m = self.mqa
        att = m.attn
        x = batch_norm(m.norm, x)
        B, c, H, W = x.shape
        h = att.num_heads
        q = F.conv2d(x, att.q.weight[:, :c]).reshape(B, h, att.key_dim, H * W)
        kx = conv_norm_act(att.k_down, x) if att.kv_stride > 1 else x
        vx = conv_norm_act(att.v_down, x) if att.kv_stride > 1 else x
        k = F.conv2d(kx, att.k.weight[:, :c]).flatten(2)
        v = F.conv2d(vx, att.v.weight[:, :c]).flatten(2)
        # the same token-major layout and fused kernel as MultiQueryAttention2d.attend
        q, k, v = q.transpose(-1, -2), k.transpose(-1, -2).unsqueeze(1), v.transpose(-1, -2).unsqueeze(1)
        o = F.scaled_dot_product_attention(q, k.expand(B, h, -1, -1), v.expand(B, h, -1, -1))
        o = o.transpose(-1, -2).reshape(B, h * att.value_dim, H, W)
        return _layer_scale(m.layer_scale, F.conv2d(o, att.proj.weight[:out]))
