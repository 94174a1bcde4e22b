"""Mobile-Former's export forms for the ``torch.export`` runtimes (ExecuTorch / XNNPACK, LiteRT),
registered in :data:`~.export_swaps.MOBILE_FORMS`: token reads by slices, attention matmuls as 3-D
``bmm``, the dynamic ReLU folded (and for INT8 files written from int8 kernels), the token-side
modules declared float for INT8 (``int8_float``), and the depthwise convs with a channel
multiplier split into plain depthwise convs (:class:`SplitDepthwise`). Where each one's time went
before: benchmarks/INT8.md, "INT8 speed on the phone runtimes"."""

from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..blocks.mobileformer import (ChannelShuffle, DynamicReLU, FormerToMobile, Former, LiteBottleneck, MergedHead,
                                   MobileDownsample, MobileToFormer)
from ..models.mobileformer import MobileFormer
from .form_base import _ExportForm, _Part


def _first_token(tokens: torch.Tensor) -> torch.Tensor:
    """``tokens[:, 0]`` as a slice + reshape (XNNPACK has no ``select``)."""
    return tokens[:, :1].reshape(tokens.shape[0], tokens.shape[2])


def _param(like: nn.Parameter, value: torch.Tensor) -> nn.Parameter:
    """A new parameter holding ``value`` (a copy), trainable as ``like`` is."""
    return nn.Parameter(value.detach().clone(), requires_grad=like.requires_grad)


def _with(module: nn.Module, **children) -> nn.Module:
    """A shallow copy of ``module`` with its own registries and ``children`` (submodules or
    parameters) set on it; ``module`` itself is not changed."""
    new = copy.copy(module)
    new._modules, new._parameters = dict(module._modules), dict(module._parameters)
    for name, child in children.items():
        setattr(new, name, child)
    return new


def _bmm4(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for two 4-D tensors with the same leading dimensions, as one 3-D ``bmm``."""
    n, h = a.shape[:2]
    out = torch.bmm(a.reshape(n * h, a.shape[2], a.shape[3]), b.reshape(n * h, b.shape[2], b.shape[3]))
    return out.reshape(n, h, a.shape[2], b.shape[3])


class MobileDynamicReLU(_ExportForm, DynamicReLU):
    """:class:`~mobilenets.blocks.mobileformer.DynamicReLU` reading token 0 by a slice, its
    hard-sigmoid and affine folded into ``fc2``: with ``z = fc2(.)`` and spread ``s``,
    ``a1 = s (hardsigmoid(z1) - 1/2) + 1 = clamp(s z1 / 6 + 1, 1 - s/2, 1 + s/2)`` and
    ``a2 = clamp(s z2 / 6, -s/2, s/2)``: ``fc2``'s rows scaled by ``s / 6`` (its bias plus 1 on the
    first half) and one clamp per half, 7 ops where the literal form took 15 (x16 in
    Mobile-Former-96M, whose time is mostly per-op overhead). ``fc2`` is a folded copy (its
    ``state_dict`` values differ; same keys, trainable)."""

    @classmethod
    def from_module(cls, m: nn.Module):
        new = super().from_module(m)
        if not isinstance(m.gate, nn.Hardsigmoid):
            raise TypeError(f"expected a DynamicReLU gated by a hard-sigmoid, got {type(m.gate).__name__}")
        k = m.scale / 6.0
        offset = torch.cat([torch.ones(m.chs), torch.zeros(m.chs)]).to(m.fc2.weight)
        w = m.fc2.weight
        bias = m.fc2.bias.detach() * k if m.fc2.bias is not None else torch.zeros_like(offset)
        new._modules = dict(new._modules)
        new.fc2 = _with(m.fc2, weight=_param(w, w.detach() * k), bias=_param(w, bias + offset))
        new.gate = nn.Identity()
        return new

    def coefficients(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.fc2(self.act(self.fc1(_first_token(tokens))))
        n, half = z.shape[0], 0.5 * self.scale
        a1 = z[:, :self.chs].clamp(1.0 - half, 1.0 + half)
        a2 = z[:, self.chs:].clamp(-half, half)
        return a1.reshape(n, self.chs, 1, 1), a2.reshape(n, self.chs, 1, 1)

    def with_channel_order(self, order: torch.Tensor) -> "MobileDynamicReLU":
        """A copy whose coefficients come out for the channels ``order`` (output channel ``i``
        gets channel ``order[i]``'s)."""
        return _with(self, fc2=_rows(self.fc2, torch.cat([order, order + self.chs])))


class MobileInt8DynamicReLU(MobileDynamicReLU):
    """:class:`MobileDynamicReLU` for INT8 files: ``max(a1 x, a2 x) = a2 x + relu((a1 - a2) x)``,
    from int8 mul / relu / add kernels, where LiteRT's XNNPACK delegate does not take an int8
    MAXIMUM (each one, on a whole feature map, split the delegated graph and ran TFLite's own
    kernel).

    The folded ``fc2`` is split by rows into ``fc2_a1`` and ``fc2_a2``, one linear per
    coefficient, instead of one linear whose int8 output is sliced in two. XNNPACK's quantizer
    gives a slice the fake quantizer of the tensor it slices: one module applied at three nodes,
    whose observer, in quantization-aware training, moves at each of them every step. Measured on
    a digit-clutter Mobile-Former-96M (ExecuTorch QAT, 50 steps): the distillation KL against fp32
    grew from 0.003 to 0.032 with the slices; with those fake quantizers off it was 0.006, with
    this form 0.012 (0.008 after 100 steps, as LiteRT's). The QAT file had ended 1.0 point under
    fp32, where LiteRT's, whose quantizer leaves the slices alone, matched it. Each coefficient
    also gets its own int8 range ([0, 2] and [-1, 1] rather than one over both)."""

    @classmethod
    def from_module(cls, m: nn.Module):
        new = super().from_module(m)
        fc2, c = new.fc2, new.chs
        del new._modules["fc2"]
        for name, rows in (("fc2_a1", slice(0, c)), ("fc2_a2", slice(c, 2 * c))):
            lin = torch.nn.utils.skip_init(nn.Linear, fc2.in_features, c, device=fc2.weight.device,
                                           dtype=fc2.weight.dtype)  # no random init: both are set here
            lin.weight, lin.bias = _param(fc2.weight, fc2.weight[rows]), _param(fc2.weight, fc2.bias[rows])
            setattr(new, name, lin)
        return new

    def coefficients(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.act(self.fc1(_first_token(tokens)))
        n, half = h.shape[0], 0.5 * self.scale
        a1 = self.fc2_a1(h).clamp(1.0 - half, 1.0 + half)
        a2 = self.fc2_a2(h).clamp(-half, half)
        return a1.reshape(n, self.chs, 1, 1), a2.reshape(n, self.chs, 1, 1)

    def with_channel_order(self, order: torch.Tensor) -> "MobileInt8DynamicReLU":
        return _with(self, fc2_a1=_rows(self.fc2_a1, order), fc2_a2=_rows(self.fc2_a2, order))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        a1, a2 = self.coefficients(tokens)
        return x * a2 + F.relu(x * (a1 - a2))


class MobileMobileToFormer(_ExportForm, MobileToFormer):
    """Mobile -> Former with its two attention matmuls as 3-D ``bmm``."""

    int8_float = ("",)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        m = tokens.shape[1]
        q, k = self._qk(x, tokens)
        attn = (_bmm4(q, k) * self.scale).softmax(dim=-1)
        out = _bmm4(attn, k.transpose(-1, -2)).transpose(1, 2).reshape(n, m, c)
        out = out * (self.gate_act(self.gate(tokens)) * 2.0)
        return self.norm(tokens + self.drop_path(self.proj(out)))


class MobileFormerBlockFormer(_ExportForm, Former):
    """The Former with its attention matmuls as 3-D ``bmm``."""

    int8_float = ("",)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n, m, d = tokens.shape
        q, k = self._qk(tokens)
        attn = (_bmm4(q, k.transpose(-1, -2)) * self.scale).softmax(dim=-1)
        out = _bmm4(attn, k).transpose(1, 2).reshape(n, m, d)
        tokens = self.norm1(tokens + self.drop_path(self.proj(out)))
        return self.norm2(tokens + self.fc2(self.act(self.fc1(tokens))))


class MobileFormerToMobile(_ExportForm, FormerToMobile):
    """Mobile <- Former with the per-position softmax over the ``M`` tokens written out on the
    channel-major score matrix ``s = k q^T`` (``(heads, M, H W)``, the map never transposed):
    ``e = exp(s - max_j s_j)`` with the max from ``M`` row slices, the update ``(v e) / (1 e)``
    from two 3-D ``bmm`` (the softmax's normaliser ``1 e`` a matmul with a row of ones).

    Why: a last-dimension softmax over rows of ``M`` elements (the form before, with the score
    matrix transposed around it) ran at ~28 ns per row in XNNPACK, overhead-bound: 0.18 ms for the
    56x56 map of Mobile-Former-96M, the slowest operator of the file; this bridge there took
    0.33 ms in ExecuTorch fp32, 0.12 ms in this form (224 px, 2 threads; benchmarks/INT8.md).

    The ones row needs ``M``, which the bridge does not know: :class:`MobileFormerExport` sets it
    (:meth:`set_num_tokens`); without it the bridge runs the transposed softmax. The update
    (``update``, a child: in INT8 files of a ``float_forms`` runtime it stays float) is added to the
    map apart, so that the residual add stays int8 on the int8 map."""

    int8_float = ("update",)

    @classmethod
    def from_module(cls, m: nn.Module):
        new = super().from_module(m)
        new.update = _Part(new.attend_update)
        return new

    @property
    def num_tokens(self) -> Optional[int]:
        """The token count of the written-out softmax (:meth:`set_num_tokens`); None: not set."""
        ones = self._buffers.get("ones")
        return None if ones is None else ones.shape[-1]

    def set_num_tokens(self, num_tokens: int) -> None:
        """Run the written-out softmax for ``num_tokens`` tokens (a constant row of ones, not in
        the ``state_dict``)."""
        ref = self.k.weight
        self.register_buffer("ones", torch.ones(1, self.heads, num_tokens, dtype=ref.dtype, device=ref.device),
                             persistent=False)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return x + self.update(x, tokens)

    def attend_update(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        m, hd = tokens.shape[1], c // self.heads
        if m != self.num_tokens:
            return self._transposed_softmax_update(x, tokens)
        q = x.reshape(n * self.heads, hd, h * w)
        k = (self.k(tokens) * self.scale).reshape(n, m, self.heads, hd).transpose(1, 2).reshape(n * self.heads, m, hd)
        s = torch.bmm(k, q)                                                     # (N h, M, H W)
        top = s[:, :1]
        for j in range(1, m):
            top = torch.maximum(top, s[:, j:j + 1])
        e = torch.exp(s - top)
        v = self.v(tokens).reshape(n, m, self.heads, hd).permute(0, 2, 3, 1).reshape(n * self.heads, hd, m)
        ones = _batch_copies(self.ones, n).reshape(n * self.heads, 1, m)
        out = torch.bmm(v, e) / torch.bmm(ones, e)
        return self.drop_path(out.reshape(n, c, h, w))

    def _transposed_softmax_update(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        m, hd = tokens.shape[1], c // self.heads
        q = x.reshape(n, self.heads, hd, h * w)
        k = self.k(tokens).reshape(n, m, self.heads, hd).transpose(1, 2)
        p_t = (_bmm4(k, q) * self.scale).transpose(-1, -2).softmax(dim=-1).transpose(-1, -2)
        v = self.v(tokens).reshape(n, m, self.heads, hd).permute(0, 2, 3, 1)
        return self.drop_path(_bmm4(v, p_t).reshape(n, c, h, w))


class MobileMergedHead(_ExportForm, MergedHead):
    """Mobile-Former's head with a global pool and token 0 read by a slice."""

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(self.expand(self.shuffle(x)))  # the (swapped) global pool
        if self.pool.pool_type == "":
            return x
        x = self.act(self.norm(self.hidden(torch.cat([self.pool_act(x), _first_token(tokens)], dim=1))))
        return x if pre_logits else self.fc(self.drop(x))


class SplitDepthwise(nn.Module):
    """A BatchNorm-folded depthwise ``ConvNormAct`` with channel multiplier ``m`` (``C -> m C``,
    groups ``C``) as ``m`` plain depthwise convs (``C -> C``), one per multiplier index, their
    outputs concatenated: output channel ``j C + i`` is the original's ``i m + j``.

    Why: XNNPACK runs only a multiplier-1 depthwise conv on its depthwise kernels; ``m > 1``
    becomes a grouped GEMM with 9-element rows. Measured on Mobile-Former-96M (ExecuTorch, 224,
    2 threads): its ten such convs took 0.75 ms of 3.0 ms in fp32 and 0.73 ms of 2.6 ms in INT8
    (not faster: the GEMM is overhead-bound). Same MACs here; the channel order is the owning
    block's form's business (:func:`_split_multiplier`)."""

    def __init__(self, cna: nn.Module):
        super().__init__()
        conv = cna.conv
        c, m = conv.in_channels, conv.out_channels // conv.in_channels
        self.convs = nn.ModuleList()
        for j in range(m):
            one = nn.Conv2d(c, c, conv.kernel_size, conv.stride, conv.padding, conv.dilation, groups=c,
                            bias=conv.bias is not None, padding_mode=conv.padding_mode,
                            device=conv.weight.device, dtype=conv.weight.dtype)
            one.weight = _param(conv.weight, conv.weight[j::m])
            if conv.bias is not None:
                one.bias = _param(conv.bias, conv.bias[j::m])
            self.convs.append(one)
        self.act = cna.act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _cat_channels([self.act(conv(x)) for conv in self.convs])  # the activation fuses into each conv


def _cat_channels(ys: list) -> torch.Tensor:
    """``torch.cat(ys, 1)`` as concatenations of at most 5 (XNNPACK's largest)."""
    while len(ys) > 5:
        ys = [torch.cat(ys[i:i + 5], 1) if len(ys[i:i + 5]) > 1 else ys[i] for i in range(0, len(ys), 5)]
    return torch.cat(ys, 1) if len(ys) > 1 else ys[0]


def _multiplier(cna: nn.Module) -> int:
    """The channel multiplier of a folded depthwise ``ConvNormAct`` that :class:`SplitDepthwise`
    can take (a plain ``nn.Conv2d``, no BatchNorm left, no anti-aliasing pool); 0 otherwise."""
    conv = getattr(cna, "conv", None)
    if type(conv) is not nn.Conv2d or conv.groups != conv.in_channels or conv.out_channels % conv.in_channels:
        return 0
    if not all(isinstance(getattr(cna, a, None), nn.Identity) for a in ("bn", "aa")):
        return 0
    return conv.out_channels // conv.in_channels


def _split_multiplier(block: nn.Module, dw: str, shuffle: str, act: str, pw: str) -> None:
    """In place on an export form: ``block.<dw>`` (channel multiplier > 1) as a
    :class:`SplitDepthwise`, and what reads its output set to its channel order: a channel
    shuffle over its input channels (Mobile-Former-26M) already is that order, so it is dropped;
    otherwise the per-channel dynamic-ReLU coefficients (``act``, may be None) and the next 1x1
    conv's input channels (``pw``, ungrouped) are permuted. Left as is when neither applies."""
    cna, sh = getattr(block, dw), getattr(block, shuffle)
    m = _multiplier(cna)
    if m < 2:
        return
    c = cna.conv.in_channels
    perm = torch.tensor([i * m + j for j in range(m) for i in range(c)])
    nxt = getattr(block, pw)
    if isinstance(sh, ChannelShuffle) and sh.groups == c:
        setattr(block, shuffle, nn.Identity())  # shuffled order == the split's order
    elif isinstance(sh, nn.Identity) and type(nxt.conv) is nn.Conv2d and nxt.conv.groups == 1:
        if act is not None:
            setattr(block, act, getattr(block, act).with_channel_order(perm))
        w = nxt.conv.weight
        setattr(block, pw, _with(nxt, conv=_with(nxt.conv, weight=_param(w, w[:, perm]))))
    else:
        return
    setattr(block, dw, SplitDepthwise(cna))


def _rows(lin: nn.Linear, rows: torch.Tensor) -> nn.Linear:
    """A copy of ``lin`` computing its outputs in the order ``rows``."""
    if lin.bias is None:
        return _with(lin, weight=_param(lin.weight, lin.weight[rows]))
    return _with(lin, weight=_param(lin.weight, lin.weight[rows]), bias=_param(lin.bias, lin.bias[rows]))


class MobileLiteBottleneck(_ExportForm, LiteBottleneck):
    """Mobile-Former's bneck-lite with its multiplier depthwise conv split
    (:class:`SplitDepthwise`); its parameters are permuted copies (a different ``state_dict``)."""

    @classmethod
    def from_module(cls, m: nn.Module):
        new = super().from_module(m)
        _split_multiplier(new, "dw", "shuffle", None, "project")
        return new


class MobileMobileDownsample(_ExportForm, MobileDownsample):
    """Mobile-Former's stride-2 Mobile sub-block with both multiplier depthwise convs split
    (:class:`SplitDepthwise`); its parameters are permuted copies (a different ``state_dict``)."""

    @classmethod
    def from_module(cls, m: nn.Module):
        new = super().from_module(m)
        _split_multiplier(new, "dw1", "shuffle1", "act1", "pw1")
        _split_multiplier(new, "dw2", "shuffle2", "act2", "pw2")
        return new


class MobileFormerExport(_ExportForm, MobileFormer):
    """Mobile-Former whose token table is broadcast over the batch by a reshape (batch 1) or a
    concatenation, instead of ``unsqueeze`` + ``repeat``; it gives its Mobile <- Former forms the
    token count (:meth:`MobileFormerToMobile.set_num_tokens`)."""

    @classmethod
    def from_module(cls, m: nn.Module):
        new = super().from_module(m)
        for sub in new.modules():
            if isinstance(sub, MobileFormerToMobile):
                sub.set_num_tokens(new.tokens.shape[0])
        return new

    def initial_tokens(self, batch_size: int) -> torch.Tensor:
        return _batch_copies(self.tokens.reshape(1, *self.tokens.shape), batch_size)


def _batch_copies(t: torch.Tensor, n) -> torch.Tensor:
    """``t`` (leading dimension 1) repeated ``n`` times along it, by a concatenation (XNNPACK has
    no ``expand``); ``t`` itself for ``n == 1``."""
    if isinstance(n, torch.SymInt):  # a dynamic-batch capture (quantization-aware training):
        return t.expand(n, *t.shape[1:])  # export_mobile drops it again at batch 1 (drop_noop_expands)
    return t if n == 1 else torch.cat([t] * n)
