"""Export-time module swaps: modules whose eager formulation suits PyTorch (fused kernels) but
not an exported graph get replaced, before ``torch.onnx.export``, by a subclass computing the
same function in an export-friendly way; the way :func:`~mobilenets.deploy.fuse` replaces
BatchNorms. The models themselves never ask whether they are being exported.

:func:`swap_for_export` is what :func:`~mobilenets.deploy.export_onnx` runs; call it before
your own ``torch.onnx.export`` of a model of this library to get the same graph.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..blocks.attention import MultiQueryAttention2d

__all__ = ["ExportMultiQueryAttention2d", "swap_for_export"]


class ExportMultiQueryAttention2d(MultiQueryAttention2d):
    """Mobile MQA attention computed channel-major, for export.

    ``P^T = softmax_M(k^T q)`` and ``o = v P^T`` keep every tensor channel-major, so the only
    layout change is one transpose of the (small) key; the shared k / v broadcast in MatMul (no
    Expand), and the heads come out in the conv's channel order with a plain Reshape. Same
    parameters, same outputs (to float rounding) as :class:`MultiQueryAttention2d`.
    """

    @classmethod
    def from_module(cls, m: MultiQueryAttention2d) -> "ExportMultiQueryAttention2d":
        """The export form of ``m``, sharing its parameters and submodules (same state_dict).

        Args:
            m: the eager attention module.
        """
        if not isinstance(m, MultiQueryAttention2d):
            raise TypeError(f"expected a MultiQueryAttention2d, got {type(m).__name__}")
        new = cls.__new__(cls)
        new.__dict__.update(m.__dict__)  # nn.Module state: parameters, buffers, submodules, flags
        new._modules, new._parameters, new._buffers = dict(m._modules), dict(m._parameters), dict(m._buffers)
        return new

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        q, k, v, (qh, qw) = self._project(x)
        p_t = torch.softmax(k.transpose(1, 2).unsqueeze(1) @ (q * self.scale), dim=2)  # (B, h, Nkv, Nq)
        o = v.unsqueeze(1) @ p_t  # (B, h, vd, Nq)
        return o.reshape(B, self.num_heads * self.value_dim, qh, qw)


#: eager class -> its export form (exact class match: an export form is not swapped again).
EXPORT_FORMS: dict[type, type] = {MultiQueryAttention2d: ExportMultiQueryAttention2d}


def swap_for_export(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Replace every module that has an export form (:data:`EXPORT_FORMS`) by it.

    Args:
        model: any model of this library (a classifier or a feature extractor).
        inplace: modify ``model`` itself instead of a deep copy.

    Returns:
        The model with export forms; it computes the same function.
    """
    m = model if inplace else copy.deepcopy(model)
    for parent in list(m.modules()):
        for name, child in list(parent.named_children()):
            form = EXPORT_FORMS.get(type(child))
            if form is not None:
                setattr(parent, name, form.from_module(child))
    return m
