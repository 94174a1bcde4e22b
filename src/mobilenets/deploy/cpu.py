"""Eager CPU inference with oneDNN prepacked convolutions.

:func:`fuse` folds BatchNorms but leaves each conv a plain ``nn.Conv2d`` followed by its
activation. In eager PyTorch at small batch that costs twice per layer: oneDNN reorders the
weight into its blocked layout on every call, and the activation is a separate pass over the
output. :func:`optimize_for_cpu` removes both: every folded ``ConvNormAct`` becomes a
:class:`PackedConvAct` that holds its weight already reordered for oneDNN
(``torch.ops.mkldnn._reorder_convolution_weight``) and runs one oneDNN convolution with the
activation applied as a post-op (``torch.ops.mkldnn._convolution_pointwise``; the kernels
``torch.compile`` uses on CPU, called from eager). The model is also put in channels-last.

How much faster than fused + channels-last and than timm eager: ``mobilenets bench`` (the
``fused_onednn`` path) measures it; figures in ``benchmarks/RESULTS.md``. Outputs equal the fused
model's to float rounding (same kernels, same arithmetic).

The result is for fp32 CPU inference only: the packed weights do not follow ``.to()`` or
``.cuda()``, cannot be trained, and ``state_dict()`` still holds the plain (folded) weights of
each conv for inspection. Keep the original model for training, saving and export.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn as nn

from ..layers import Conv2dSame, ConvNormAct
from ..models.info import model_info
from .fuse import fuse

__all__ = ["onednn_available", "PackedConvAct", "optimize_for_cpu"]


def onednn_available() -> bool:
    """Whether this PyTorch build has the oneDNN (mkldnn) fused convolution operators."""
    try:
        return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_convolution_pointwise") \
            and hasattr(torch.ops.mkldnn, "_reorder_convolution_weight")
    except (AttributeError, RuntimeError):
        return False


def _post_op(act: nn.Module) -> Optional[tuple[str, list, str]]:
    """oneDNN post-op ``(attr, scalars, algorithm)`` computing ``act``, or ``None`` if it has none."""
    if isinstance(act, nn.Identity):
        return "none", [], ""
    if isinstance(act, nn.ReLU):
        return "relu", [], ""
    if isinstance(act, nn.Hardtanh):  # ReLU6 included
        return "hardtanh", [float(act.min_val), float(act.max_val)], ""
    if isinstance(act, nn.Hardswish):
        return "hardswish", [], ""
    if isinstance(act, nn.SiLU):
        return "swish", [], ""
    if isinstance(act, nn.GELU):
        return "gelu", [], act.approximate
    if isinstance(act, nn.Sigmoid):
        return "sigmoid", [], ""
    return None


def _packable(block: nn.Module) -> bool:
    """A BN-folded ``ConvNormAct`` with static zero padding and an activation oneDNN can fuse
    (a TF "SAME" :class:`~mobilenets.layers.Conv2dSame` pads per input size: it stays as is)."""
    return isinstance(block, ConvNormAct) and isinstance(block.bn, nn.Identity) and _post_op(block.act) is not None \
        and block.conv.padding_mode == "zeros" and not isinstance(block.conv.padding, str) \
        and not isinstance(block.conv, Conv2dSame)


class PackedConvAct(nn.Module):
    """A BN-folded :class:`~mobilenets.layers.ConvNormAct` as one oneDNN convolution with a
    prepacked weight and its activation fused (fp32 CPU inference only).

    Args:
        block: a ``ConvNormAct`` whose norm has been folded (``fuse``) and whose activation
            oneDNN can apply (ReLU, ReLU6 / Hardtanh, Hardswish, SiLU, GELU, Sigmoid, none).
        input_size: ``(N, C, H, W)`` the packing is tuned for; any other size still runs.
    """

    def __init__(self, block: ConvNormAct, input_size: tuple[int, int, int, int]):
        super().__init__()
        conv = block.conv
        if not _packable(block) or conv.weight.dtype != torch.float32:
            raise ValueError("PackedConvAct needs a fused ConvNormAct (BatchNorm folded, zero padding, fp32) with "
                             f"an activation oneDNN can fuse; got bn={type(block.bn).__name__}, "
                             f"act={type(block.act).__name__}, padding={conv.padding!r}, dtype={conv.weight.dtype}")
        self.conv = conv  # the plain weights, for state_dict / inspection; not used in forward
        self.aa = block.aa
        self._has_aa = not isinstance(block.aa, nn.Identity)
        self.attr, self.scalars, self.algorithm = _post_op(block.act)
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        with torch.no_grad():
            self._w = torch.ops.mkldnn._reorder_convolution_weight(
                conv.weight.detach().contiguous(), self.padding, self.stride, self.dilation, self.groups,
                list(input_size))
            self._b = None if conv.bias is None else conv.bias.detach().clone()
        self._op = torch.ops.mkldnn._convolution_pointwise.default

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._op(x, self._w, self._b, self.padding, self.stride, self.dilation, self.groups, self.attr,
                     self.scalars, self.algorithm)
        return self.aa(y) if self._has_aa else y

    def extra_repr(self) -> str:
        return f"oneDNN prepacked, post-op={self.attr}"


def optimize_for_cpu(model: nn.Module, input_size: tuple[int, int] = (224, 224), batch_size: int = 1) -> nn.Module:
    """A copy of ``model`` for fast eager fp32 inference on CPU: BatchNorms folded
    (:func:`~mobilenets.deploy.fuse`), channels-last memory format, and every conv + activation
    a :class:`PackedConvAct` (one oneDNN convolution, prepacked weight, fused activation).

    Feed it channels-last input (``x.contiguous(memory_format=torch.channels_last)``; other
    input works, slower). Outputs equal ``model.eval()``'s to float rounding. Convs oneDNN
    cannot fuse (an unsupported activation, attention projections) stay as they are.

    Args:
        model: any model of this library (not modified).
        input_size: ``(H, W)`` the weights are packed for; other sizes run correctly.
        batch_size: batch size the weights are packed for.

    Raises:
        RuntimeError: this PyTorch build has no oneDNN fused convolution (use :func:`fuse`).
        ValueError: the model is not fp32.
    """
    if not onednn_available():
        raise RuntimeError("this PyTorch build has no oneDNN (mkldnn) fused convolution operators; use "
                           "mobilenets.deploy.fuse(model) instead")
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes - {torch.float32}:
        raise ValueError(f"optimize_for_cpu runs fp32 models; this one has parameters of type "
                         f"{sorted(str(d) for d in dtypes)}: convert it first (model.float())")
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    net = fuse(copy.deepcopy(model)).to(memory_format=torch.channels_last)
    blocks = [m for m in net.modules() if _packable(m)]
    shapes: dict[int, tuple] = {}

    def record(mod, inp):  # returns None: the input is left as it is
        shapes.setdefault(id(mod), tuple(inp[0].shape))

    hooks = [b.register_forward_pre_hook(record) for b in blocks]
    in_chans = model_info(model).in_chans
    try:
        with torch.no_grad():
            net(torch.zeros(batch_size, in_chans, *input_size).contiguous(memory_format=torch.channels_last))
    finally:
        for h in hooks:
            h.remove()
    packed = {id(b): PackedConvAct(b, shapes[id(b)]) for b in blocks if id(b) in shapes}
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in packed:
                setattr(parent, name, packed[id(child)])
    net.eval()
    net.cpu_optimized = True
    return net
