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
    same function from those pieces only, so the whole graph is delegated. Mobile MQA's matmuls
    have the query heads as their batch (:class:`LiteRTMultiQueryAttention2d`: LiteRT turns a
    batch-1 matmul into a fully-connected op its delegate refuses). Mobile-Former's forms live in
    :mod:`.mobileformer_forms`.
``"mobile_int8"``
    the same, for INT8 files: hard-swish and the dynamic ReLU from int8 add / clamp / mul
    (:data:`MOBILE_INT8_FORMS`).
``"executorch"``
    the mobile forms plus what ExecuTorch's XNNPACK delegate alone needs (LiteRT converts these
    ops right): :data:`EXECUTORCH_FORMS`. Mobile MQA's heads folded into one 3-D ``bmm`` (its
    delegate refuses a concatenation of one tensor with itself). Its GELU ignores ``approximate="tanh"`` (it computes
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
from ..blocks.mobileformer import DynamicReLU, FormerToMobile, Former, LiteBottleneck, MergedHead, MobileDownsample, MobileToFormer
from ..models.mobileformer import MobileFormer
from .form_base import _ExportForm
from .mobileformer_forms import (MobileDynamicReLU, MobileFormerBlockFormer, MobileFormerExport, MobileFormerToMobile,
                                 MobileInt8DynamicReLU, MobileLiteBottleneck, MobileMergedHead, MobileMobileDownsample,
                                 MobileMobileToFormer, SplitDepthwise)
from ..layers.norm import RMSNorm2d
from ..layers.pool import GlobalPool
from ..models.mobilenet import ClassifierHead

__all__ = ["EXECUTORCH_FORMS", "EXECUTORCH_INT8_FORMS", "EXPORT_FORMS", "MOBILE_FORMS", "MOBILE_INT8_FORMS", "TARGETS",
           "ExportMultiQueryAttention2d", "LiteRTMultiQueryAttention2d",
           "MobileClassifierHead", "MobileDynamicReLU", "MobileGlobalPool", "MobileFormerBlockFormer", "MobileFormerToMobile",
           "MobileHardsigmoid", "MobileInt8DynamicReLU", "MobileInt8Hardswish", "MobileLayerNorm", "MobileLiteBottleneck",
           "MobileMobileDownsample", "SplitDepthwise", "MobileMergedHead",
           "MobileMobileToFormer", "MobileMultiQueryAttention2d", "MobileFormerExport", "XnnpackGeluTanh",
           "XnnpackMultiScaleFusionAdapter", "XnnpackRMSNorm2d", "float_modules", "nearest_resize", "swap_for_export"]


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


class LiteRTMultiQueryAttention2d(MobileMultiQueryAttention2d):
    """Mobile MQA for LiteRT: the query heads as the matmuls' batch, the shared key and value
    concatenated once per head. LiteRT's converter turns a batch-1 matmul whose right side is not
    a constant into a ``FULLY_CONNECTED`` with dynamic weights, which its XNNPACK delegate does not
    take: :class:`MobileMultiQueryAttention2d`'s two matmuls ran on LiteRT's own kernels
    (MobileNetV4-Hybrid-M: 8 of them in fp32, 16 in INT8, 9 and 17 delegated partitions). A
    ``BATCH_MATMUL`` with batch ``h`` is delegated. ExecuTorch keeps the folded form (its XNNPACK
    delegate refuses a concatenation of one tensor with itself)."""

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        q, k, v, (qh, qw) = self._project(x)          # q (B, h, kd, Nq), k (B, kd, Nkv), v (B, vd, Nkv)
        h, n_q = self.num_heads, qh * qw
        q = (q * self.scale).permute(0, 1, 3, 2).reshape(B * h, n_q, self.key_dim)
        n_kv = k.shape[-1]
        k = torch.cat([k.reshape(B, 1, self.key_dim, n_kv)] * h, dim=1).reshape(B * h, self.key_dim, n_kv)
        v = v.permute(0, 2, 1).reshape(B, 1, n_kv, self.value_dim)
        v = torch.cat([v] * h, dim=1).reshape(B * h, n_kv, self.value_dim)
        p = torch.softmax(torch.bmm(q, k), dim=-1)    # (B h, Nq, Nkv)
        o = torch.bmm(p, v).reshape(B, h, n_q, self.value_dim).permute(0, 1, 3, 2)
        return o.reshape(B, h * self.value_dim, qh, qw)


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
    MultiQueryAttention2d: LiteRTMultiQueryAttention2d,
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
EXECUTORCH_FORMS: dict[type, type] = {**MOBILE_FORMS, MultiQueryAttention2d: MobileMultiQueryAttention2d,
                                      nn.GELU: XnnpackGeluTanh, RMSNorm2d: XnnpackRMSNorm2d,
                                      MultiScaleFusionAdapter: XnnpackMultiScaleFusionAdapter}

#: the ExecuTorch forms of an INT8 program: the dynamic ReLU from int8 mul / relu / add as well, where
#: XNNPACK's quantizer leaves its maximum float (four map-sized conversions around each one; Mobile-Former-
#: 96M's INT8 program 3.93 -> 3.81 ms, benchmarks/INT8.md). Hard-swish keeps its builtin: XNNPACK runs it
#: in int8 (the add / clamp / mul form measured slower, MNv3-L 2.33 -> 2.82 ms).
EXECUTORCH_INT8_FORMS: dict[type, type] = {**EXECUTORCH_FORMS, DynamicReLU: MobileInt8DynamicReLU}

TARGETS: dict[str, dict[type, type]] = {"onnx": EXPORT_FORMS, "mobile": MOBILE_FORMS,
                                        "mobile_int8": MOBILE_INT8_FORMS, "executorch": EXECUTORCH_FORMS,
                                        "executorch_int8": EXECUTORCH_INT8_FORMS}


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


def swap_for_export(model: nn.Module, inplace: bool = False, target: str = "onnx") -> nn.Module:
    """Replace every module that has an export form for ``target`` by it (the model itself
    too, when its class has one).

    Args:
        model: any model of this library (a classifier or a feature extractor).
        inplace: modify ``model``'s submodules instead of a deep copy (a swapped root is a new
            object sharing them: use the returned model).
        target: ``"onnx"`` (:data:`EXPORT_FORMS`), ``"mobile"`` (:data:`MOBILE_FORMS`),
            ``"mobile_int8"`` (:data:`MOBILE_INT8_FORMS`), ``"executorch"`` (:data:`EXECUTORCH_FORMS`) or
            ``"executorch_int8"`` (:data:`EXECUTORCH_INT8_FORMS`).

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
