"""Exact BatchNorm folding into a neighbouring conv / linear layer (the primitive the fuse
pass, :func:`mobilenets.models.fuse.fuse`, applies across a model)."""

from __future__ import annotations

import torch
import torch.nn as nn

_BN = nn.modules.batchnorm._BatchNorm


def _bn_scale_shift(bn: _BN) -> tuple[torch.Tensor, torch.Tensor]:
    std = torch.sqrt(bn.running_var + bn.eps)
    w = bn.weight if bn.affine else torch.ones_like(std)
    b = bn.bias if bn.affine else torch.zeros_like(std)
    scale = w / std
    return scale, b - bn.running_mean * scale


@torch.no_grad()
def fold_bn_after(layer: nn.Module, bn: _BN) -> None:
    """In place: ``layer`` (Conv2d or Linear, depthwise included) followed by ``bn`` becomes
    ``layer`` alone, with a bias."""
    scale, shift = _bn_scale_shift(bn)
    w = layer.weight
    layer.weight.copy_(w * scale.reshape(-1, *([1] * (w.ndim - 1))))
    bias = layer.bias if layer.bias is not None else torch.zeros_like(scale)
    new_bias = bias * scale + shift
    if layer.bias is None:
        layer.bias = nn.Parameter(new_bias)
    else:
        layer.bias.copy_(new_bias)


@torch.no_grad()
def fold_bn_before(bn: _BN, conv: nn.Conv2d) -> None:
    """In place: ``bn`` followed by an unpadded, ungrouped 1x1 ``conv`` becomes ``conv``."""
    if conv.kernel_size != (1, 1) or conv.groups != 1:
        raise ValueError("a preceding BatchNorm folds exactly only into an ungrouped 1x1 conv")
    scale, shift = _bn_scale_shift(bn)
    w = conv.weight  # (out, in, 1, 1)
    bias = conv.bias if conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
    new_bias = bias + (w[:, :, 0, 0] * shift).sum(1)
    conv.weight.copy_(w * scale.reshape(1, -1, 1, 1))
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias)
    else:
        conv.bias.copy_(new_bias)
