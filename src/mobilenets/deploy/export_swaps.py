"""Export-time module swaps: modules whose eager formulation suits PyTorch (fused kernels) but
not an exported graph get replaced, before export, by a subclass computing the same function in
an export-friendly way; the way :func:`~mobilenets.deploy.fuse` replaces BatchNorms. The models
themselves never ask whether they are being exported.

Three targets, one mechanism (:func:`swap_for_export`):

``"onnx"``
    what :func:`~mobilenets.deploy.export_onnx` runs: Mobile MQA channel-major
    (:class:`ExportMultiQueryAttention2d`).
``"mobile"``
    what the ``torch.export`` runtimes need (ExecuTorch's XNNPACK delegate, LiteRT):
    :data:`MOBILE_FORMS`. XNNPACK takes a softmax only over the last dimension, a mean only as
    a global pool of a 4-D map with ``keepdim=True``, matmuls only as 3-D ``bmm`` (a 4-D ``@``
    decomposes into ``expand`` copies it does not take), no ``select`` / leading ``unsqueeze``
    and no ``hardsigmoid`` (it decomposes into a dtype cast): every form below computes the
    same function from those pieces only, so the whole graph is delegated.
``"mobile_int8"``
    the same, for INT8 files: hard-swish from int8 add / clamp / mul (:data:`MOBILE_INT8_FORMS`).
``"executorch"``
    the mobile forms plus what ExecuTorch's XNNPACK delegate alone needs (LiteRT converts these
    ops right): :data:`EXECUTORCH_FORMS`. Its GELU ignores ``approximate="tanh"`` (it computes
    the erf GELU, up to 4.7e-4 away), its mean reduces only the spatial dimensions (RMSNorm's
    mean over channels would run on portable kernels) and it has no nearest upsampling
    (MobileNetV5's fusion adapter).

Call ``swap_for_export(model, target=...)`` before your own ``torch.onnx.export`` /
``torch.export.export`` of a model of this library to get the same graph.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..blocks.attention import MultiQueryAttention2d
from ..blocks.msfa import MultiScaleFusionAdapter, to_resolution
from ..blocks.mobileformer import (ChannelShuffle, DynamicReLU, FormerToMobile, Former, LiteBottleneck, MergedHead,
                                   MobileDownsample, MobileToFormer)
from ..models.mobileformer import MobileFormer
from ..layers.norm import RMSNorm2d
from ..layers.pool import GlobalPool
from ..models.mobilenet import ClassifierHead

__all__ = ["EXECUTORCH_FORMS", "EXPORT_FORMS", "MOBILE_FORMS", "MOBILE_INT8_FORMS", "TARGETS",
           "ExportMultiQueryAttention2d",
           "MobileClassifierHead", "MobileDynamicReLU", "MobileGlobalPool", "MobileFormerBlockFormer", "MobileFormerToMobile",
           "MobileHardsigmoid", "MobileInt8DynamicReLU", "MobileInt8Hardswish", "MobileLayerNorm", "MobileLiteBottleneck",
           "MobileMobileDownsample", "SplitDepthwise", "MobileMergedHead",
           "MobileMobileToFormer", "MobileMultiQueryAttention2d", "MobileFormerExport", "XnnpackGeluTanh",
           "XnnpackMultiScaleFusionAdapter", "XnnpackRMSNorm2d", "float_modules", "nearest_resize", "swap_for_export"]


class _ExportForm:
    """Mixin: ``from_module(m)`` turns an eager module into this export form, sharing its
    parameters, buffers and submodules (same ``state_dict``, no copy).

    ``int8_float``: what of a form stays float in an INT8 file of a runtime that keeps such work
    float (``Runtime.float_forms``): child module names, ``""`` for the whole form
    (:func:`float_modules` lists the paths). Token-sized work gains nothing from int8, and its int8
    kernels may run outside the runtime's accelerated backend."""

    int8_float: tuple = ()

    @classmethod
    def from_module(cls, m: nn.Module):
        """The export form of ``m``.

        Args:
            m: an instance of the eager class this form subclasses.
        """
        mro = cls.__mro__
        base = mro[mro.index(_ExportForm) + 1]  # the eager class (a form may refine another form)
        if not isinstance(m, base):
            raise TypeError(f"expected a {base.__name__}, got {type(m).__name__}")
        new = cls.__new__(cls)
        new.__dict__.update(m.__dict__)  # nn.Module state: parameters, buffers, submodules, flags
        new._modules, new._parameters, new._buffers = dict(m._modules), dict(m._parameters), dict(m._buffers)
        return new


class ExportMultiQueryAttention2d(_ExportForm, MultiQueryAttention2d):
    """Mobile MQA attention computed channel-major, for ONNX.

    ``P^T = softmax_M(k^T q)`` and ``o = v P^T`` keep every tensor channel-major, so the only
    layout change is one transpose of the (small) key; the shared k / v broadcast in MatMul (no
    Expand), and the heads come out in the conv's channel order with a plain Reshape. Same
    parameters, same outputs (to float rounding) as :class:`MultiQueryAttention2d`.
    """

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        q, k, v, (qh, qw) = self._project(x)
        p_t = torch.softmax(k.transpose(1, 2).unsqueeze(1) @ (q * self.scale), dim=2)  # (B, h, Nkv, Nq)
        o = v.unsqueeze(1) @ p_t  # (B, h, vd, Nq)
        return o.reshape(B, self.num_heads * self.value_dim, qh, qw)


class MobileMultiQueryAttention2d(_ExportForm, MultiQueryAttention2d):
    """Mobile MQA for XNNPACK / LiteRT: the query heads folded into the query positions.

    One key and one value head are shared by all ``h`` query heads, so the ``h`` score
    matrices are one matmul ``(B, h Nq, kd) @ (B, kd, Nkv)``: plain 3-D ``bmm`` (no broadcast,
    no ``expand``), a softmax over the last dimension, ``(B, h Nq, Nkv) @ (B, Nkv, vd)``, and
    the heads go back to the conv's channel order with one permute. Same function as
    :class:`MultiQueryAttention2d` (to float rounding).
    """

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        q, k, v, (qh, qw) = self._project(x)          # q (B, h, kd, Nq), k (B, kd, Nkv), v (B, vd, Nkv)
        h, n_q = self.num_heads, qh * qw
        q = (q * self.scale).permute(0, 1, 3, 2).reshape(B, h * n_q, self.key_dim)
        p = torch.softmax(torch.bmm(q, k), dim=-1)    # (B, h Nq, Nkv)
        o = torch.bmm(p, v.permute(0, 2, 1))          # (B, h Nq, vd)
        o = o.reshape(B, h, n_q, self.value_dim).permute(0, 1, 3, 2)
        return o.reshape(B, h * self.value_dim, qh, qw)


def _first_token(tokens: torch.Tensor) -> torch.Tensor:
    """``tokens[:, 0]`` as a slice + reshape (XNNPACK has no ``select``)."""
    return tokens[:, :1].reshape(tokens.shape[0], tokens.shape[2])


def _bmm4(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for two 4-D tensors with the same leading dimensions, as one 3-D ``bmm``."""
    n, h = a.shape[:2]
    out = torch.bmm(a.reshape(n * h, a.shape[2], a.shape[3]), b.reshape(n * h, b.shape[2], b.shape[3]))
    return out.reshape(n, h, a.shape[2], b.shape[3])


class MobileGlobalPool(_ExportForm, GlobalPool):
    """:class:`~mobilenets.layers.pool.GlobalPool` from XNNPACK's pools: the mean with
    ``keepdim=True``, the max as a max pool over the whole map, then a reshape (every pool type;
    ``""`` unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "":
            return x
        n, c = x.shape[0], x.shape[1]
        avg = x.mean((2, 3), keepdim=True).reshape(n, c)
        if self.pool_type == "avg":
            return avg
        mx = F.max_pool2d(x, kernel_size=(x.shape[2], x.shape[3])).reshape(n, c)  # XNNPACK has no amax
        if self.pool_type == "max":
            return mx
        return 0.5 * (avg + mx) if self.pool_type == "avgmax" else torch.cat([avg, mx], dim=1)


class MobileClassifierHead(_ExportForm, ClassifierHead):
    """:class:`~mobilenets.models.mobilenet.ClassifierHead` reading its (swapped) pool, without
    the training-time batch check."""

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x)
        if self.pool.pool_type == "":
            return ClassifierHead.forward(self, x, pre_logits)  # per position (pooling disabled)
        x = self.act(self.norm(self.hidden(x)))
        return x if pre_logits else self.fc(self.drop(x))


class MobileHardsigmoid(_ExportForm, nn.Hardsigmoid):
    """``hardsigmoid(x) = relu6(x + 3) / 6``, from ops XNNPACK takes (clamp, add, div)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) / 6.0


class MobileInt8Hardswish(_ExportForm, nn.Hardswish):
    """``hardswish(x) = x * (relu6(x + 3) * 1/6)`` for INT8 files: int8 ADD / MUL kernels, where
    an int8 HARD_SWISH is not taken by LiteRT's XNNPACK delegate (each one splits the delegated
    graph and runs a scalar kernel on x86: MNv3-L's INT8 file ran 2.9x slower than its fp32 one).
    The 3 and the 1/6 are ``(1, 1, 1, 1)`` constants, not Python scalars: litert-torch's layout
    pass keeps a broadcast 4-D add / mul in NHWC but wraps one with a 0-d constant in two
    transposes. The gate is quantized on its own ([0, 1]) before the product."""

    @classmethod
    def from_module(cls, m: nn.Module):
        new = super().from_module(m)
        new.register_buffer("three", torch.full((1, 1, 1, 1), 3.0), persistent=False)
        new.register_buffer("sixth", torch.full((1, 1, 1, 1), 1.0 / 6.0), persistent=False)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a head's (N, C) features have no layout to keep (and would broadcast to 4-D)
        three, sixth = (self.three, self.sixth) if x.ndim == 4 and x.dtype == self.three.dtype else (3.0, 1.0 / 6.0)
        return x * (F.relu6(x + three) * sixth)


class MobileLayerNorm(_ExportForm, nn.LayerNorm):
    """LayerNorm over the last dimension of ``(N, M, d)`` tokens from two means, a subtraction,
    a reciprocal square root and the affine (XNNPACK has no layer norm). Each mean is a linear
    layer with one ``1/d`` row: as a global pool of a 4-D view (XNNPACK's mean reduces only
    spatial dimensions) both runtimes wrapped every mean in two transposes (100 of Mobile-Former-
    96M's 250 in ExecuTorch)."""

    @classmethod
    def from_module(cls, m: nn.Module):
        new = super().from_module(m)
        d = m.normalized_shape[-1]
        w = next(iter(m.parameters()), None)
        new.register_buffer("mean_row", torch.full((1, d), 1.0 / d, dtype=w.dtype if w is not None else None,
                                                   device=w.device if w is not None else None), persistent=False)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or len(self.normalized_shape) != 1:
            return super().forward(x)
        xc = x - F.linear(x, self.mean_row)
        y = xc * torch.rsqrt(F.linear(xc * xc, self.mean_row) + self.eps)
        return y * self.weight + self.bias if self.elementwise_affine else y


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
        fc2 = copy.copy(m.fc2)
        fc2._parameters = dict(m.fc2._parameters)
        fc2.weight = nn.Parameter(m.fc2.weight.detach() * k, requires_grad=m.fc2.weight.requires_grad)
        bias = m.fc2.bias.detach() * k if m.fc2.bias is not None else torch.zeros_like(offset)
        fc2.bias = nn.Parameter(bias + offset, requires_grad=m.fc2.weight.requires_grad)
        new._modules = dict(new._modules)
        new.fc2, new.gate = fc2, nn.Identity()
        return new

    def coefficients(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.fc2(self.act(self.fc1(_first_token(tokens))))
        n, half = z.shape[0], 0.5 * self.scale
        a1 = z[:, :self.chs].clamp(1.0 - half, 1.0 + half)
        a2 = z[:, self.chs:].clamp(-half, half)
        return a1.reshape(n, self.chs, 1, 1), a2.reshape(n, self.chs, 1, 1)


class MobileInt8DynamicReLU(MobileDynamicReLU):
    """:class:`MobileDynamicReLU` for INT8 files: ``max(a1 x, a2 x) = a2 x + relu((a1 - a2) x)``,
    from int8 mul / relu / add kernels, where LiteRT's XNNPACK delegate does not take an int8
    MAXIMUM (each one, on a whole feature map, split the delegated graph and ran TFLite's own
    kernel)."""

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
    """Mobile <- Former with a last-dimension softmax: the small ``(M, H W)`` score matrix is
    transposed around it (the map itself stays channel-major), the matmuls are 3-D ``bmm``. The
    update (``update``, a child: in INT8 files of a ``float_forms`` runtime it stays float) is
    added to the map apart, so that the residual add stays int8 on the int8 map."""

    int8_float = ("update",)

    @classmethod
    def from_module(cls, m: nn.Module):
        new = super().from_module(m)
        new.update = _Part(new.attend_update)
        return new

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return x + self.update(x, tokens)

    def attend_update(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
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
            one.weight = nn.Parameter(conv.weight.detach()[j::m].clone(), requires_grad=conv.weight.requires_grad)
            if conv.bias is not None:
                one.bias = nn.Parameter(conv.bias.detach()[j::m].clone(), requires_grad=conv.bias.requires_grad)
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
            a = copy.copy(getattr(block, act))
            a._modules = dict(a._modules)
            a.fc2 = _rows(a.fc2, torch.cat([perm, perm + m * c]))
            setattr(block, act, a)
        nxt = copy.copy(nxt)
        nxt._modules = dict(nxt._modules)
        conv = copy.copy(nxt.conv)
        conv._parameters = dict(conv._parameters)
        conv.weight = nn.Parameter(nxt.conv.weight.detach()[:, perm].clone(), requires_grad=nxt.conv.weight.requires_grad)
        nxt.conv = conv
        setattr(block, pw, nxt)
    else:
        return
    setattr(block, dw, SplitDepthwise(cna))


def _rows(lin: nn.Linear, rows: torch.Tensor) -> nn.Linear:
    """A copy of ``lin`` computing its outputs in the order ``rows``."""
    new = copy.copy(lin)
    new._parameters = dict(lin._parameters)
    new.weight = nn.Parameter(lin.weight.detach()[rows].clone(), requires_grad=lin.weight.requires_grad)
    if lin.bias is not None:
        new.bias = nn.Parameter(lin.bias.detach()[rows].clone(), requires_grad=lin.bias.requires_grad)
    return new


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
    concatenation, instead of ``unsqueeze`` + ``repeat``."""

    def initial_tokens(self, batch_size: int) -> torch.Tensor:
        t = self.tokens.reshape(1, *self.tokens.shape)
        if isinstance(batch_size, torch.SymInt):  # a dynamic-batch capture (quantization-aware training):
            return t.expand(batch_size, -1, -1)   # export_mobile drops it again at batch 1 (drop_noop_expands)
        return t if batch_size == 1 else torch.cat([t] * batch_size)


class XnnpackGeluTanh(_ExportForm, nn.GELU):
    """GELU's tanh approximation written out, ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``
    (PyTorch's formula), for ExecuTorch: its XNNPACK delegate lowers ``aten.gelu`` ignoring
    ``approximate="tanh"`` and computes the erf GELU, a different function (up to 4.7e-4 apart,
    which MobileNetV5's 100-odd GELUs compound to ~7e-4 of the logits). The erf GELU is kept."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.approximate != "tanh":
            return super().forward(x)
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * (x * x * x))))


class XnnpackRMSNorm2d(_ExportForm, RMSNorm2d):
    """RMSNorm2d with its mean over channels as a 1x1 convolution (a ``1/C`` filter): XNNPACK's
    mean reduces only the spatial dimensions of a 4-D map."""

    @classmethod
    def from_module(cls, m: nn.Module):
        new = super().from_module(m)
        w = m.weight
        new.register_buffer("channel_mean", torch.full((1, m.num_features, 1, 1), 1.0 / m.num_features,
                                                       dtype=w.dtype, device=w.device), persistent=False)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(F.conv2d(x * x, self.channel_mean) + self.eps)
        return x * self.weight.view(1, -1, 1, 1)


def _nearest_indices(n_in: int, n_out: int) -> list[int]:
    """The source index of every output index of PyTorch's ``"nearest"`` resize (its float32
    scale ``n_in / n_out``, floored, clamped)."""
    scale = np.float32(n_in) / np.float32(n_out)
    return [min(int(np.floor(np.float32(i) * scale)), n_in - 1) for i in range(n_out)]


def _nearest_axis(x: torch.Tensor, dim: int, n_out: int) -> torch.Tensor:
    n_in = x.shape[dim]
    if n_out == n_in:
        return x
    if n_out % n_in == 0:  # a whole factor: f copies side by side, interleaved by a reshape
        shape = list(x.shape)
        split = (*shape[:dim + 1], 1, *shape[dim + 1:])
        shape[dim] = n_out
        # one reshape per copy: XNNPACK's concatenation takes distinct inputs only
        return torch.cat([x.reshape(split) for _ in range(n_out // n_in)], dim=dim + 1).reshape(shape)
    return torch.cat([x.narrow(dim, i, 1) for i in _nearest_indices(n_in, n_out)], dim=dim)


def nearest_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(x, size, mode="nearest")`` of an NCHW map from concatenations and
    reshapes (slices for a fraction), which XNNPACK takes (it has no nearest upsampling)."""
    return _nearest_axis(_nearest_axis(x, 2, size[0]), 3, size[1])


class XnnpackMultiScaleFusionAdapter(_ExportForm, MultiScaleFusionAdapter):
    """MobileNetV5's fusion adapter with its nearest upsampling by :func:`nearest_resize`
    (bilinear resizing and average pooling are XNNPACK's own)."""

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        if self.interpolation != "nearest":
            return super().forward(maps)
        h, w = maps[0].shape[-2], maps[0].shape[-1]
        x = torch.cat([nearest_resize(m, (h, w)) if m.shape[-2] < h or m.shape[-1] < w else m for m in maps], dim=1)
        return self.norm(to_resolution(self.ffn(x), maps[0], self.resolution[0], self.resolution[1]))


#: eager class -> its ONNX export form (exact class match: an export form is not swapped again).
EXPORT_FORMS: dict[type, type] = {MultiQueryAttention2d: ExportMultiQueryAttention2d}

#: eager class -> its form for ``torch.export`` runtimes (ExecuTorch / XNNPACK, LiteRT).
MOBILE_FORMS: dict[type, type] = {
    MultiQueryAttention2d: MobileMultiQueryAttention2d,
    ClassifierHead: MobileClassifierHead,
    GlobalPool: MobileGlobalPool,
    nn.Hardsigmoid: MobileHardsigmoid,
    nn.LayerNorm: MobileLayerNorm,
    DynamicReLU: MobileDynamicReLU,
    MobileToFormer: MobileMobileToFormer,
    Former: MobileFormerBlockFormer,
    FormerToMobile: MobileFormerToMobile,
    MergedHead: MobileMergedHead,
    LiteBottleneck: MobileLiteBottleneck,
    MobileDownsample: MobileMobileDownsample,
    MobileFormer: MobileFormerExport,
}

#: the mobile forms of an INT8 file: hard-swish from int8 add / clamp / mul kernels as well.
MOBILE_INT8_FORMS: dict[type, type] = {**MOBILE_FORMS, nn.Hardswish: MobileInt8Hardswish,
                                        DynamicReLU: MobileInt8DynamicReLU}

#: the mobile forms of an ExecuTorch (XNNPACK) program: ops its delegate gets wrong or lacks as well.
EXECUTORCH_FORMS: dict[type, type] = {**MOBILE_FORMS, nn.GELU: XnnpackGeluTanh, RMSNorm2d: XnnpackRMSNorm2d,
                                      MultiScaleFusionAdapter: XnnpackMultiScaleFusionAdapter}

TARGETS: dict[str, dict[type, type]] = {"onnx": EXPORT_FORMS, "mobile": MOBILE_FORMS,
                                        "mobile_int8": MOBILE_INT8_FORMS, "executorch": EXECUTORCH_FORMS}


def float_modules(form: nn.Module) -> list[str]:
    """Module paths of what the export forms in ``form`` keep float in INT8 (``int8_float``;
    outermost only)."""
    paths: list[str] = []
    for name, m in form.named_modules():
        for part in getattr(m, "int8_float", ()):
            path = ".".join(p for p in (name, part) if p)
            if not any(path == p or path.startswith(p + ".") for p in paths):
                paths.append(path)
    return paths


class _Part(nn.Module):
    """A parameterless child that runs a function of its parent (a bound method, not registered
    as a module: the parent's ``state_dict`` is unchanged), so that the ops it runs have their
    own module path (what ``int8_float`` names)."""

    def __init__(self, fn):
        super().__init__()
        object.__setattr__(self, "fn", fn)

    def forward(self, *args):
        return self.fn(*args)


def swap_for_export(model: nn.Module, inplace: bool = False, target: str = "onnx") -> nn.Module:
    """Replace every module that has an export form for ``target`` by it (the model itself
    too, when its class has one).

    Args:
        model: any model of this library (a classifier or a feature extractor).
        inplace: modify ``model``'s submodules instead of a deep copy (a swapped root is a new
            object sharing them: use the returned model).
        target: ``"onnx"`` (:data:`EXPORT_FORMS`), ``"mobile"`` (:data:`MOBILE_FORMS`),
            ``"mobile_int8"`` (:data:`MOBILE_INT8_FORMS`) or ``"executorch"`` (:data:`EXECUTORCH_FORMS`).

    Returns:
        The model with export forms; it computes the same function.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown export target {target!r}; expected one of {list(TARGETS)}")
    forms = TARGETS[target]
    def swap(module: nn.Module) -> nn.Module:  # children first: a swapped parent keeps them
        for name, child in list(module.named_children()):
            new = swap(child)
            if new is not child:
                setattr(module, name, new)
        form = forms.get(type(module))
        return form.from_module(module) if form is not None else module

    return swap(model if inplace else copy.deepcopy(model))
