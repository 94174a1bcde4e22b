"""Inference-time graph simplification: fold every BatchNorm into its neighbouring conv or
linear layer and remove layers that do nothing at inference (dropout, stochastic depth).

Folding a BN that *follows* a conv is exact everywhere. A BN that *precedes* convs (the
Mobile MQA input norm) is folded only into 1x1 unpadded convs, where it is exact too; when
a padded depthwise conv also reads it (K/V downsampling) the BN stays.
"""

from __future__ import annotations

import copy

import torch.nn as nn

from ..blocks import MobileMQA
from ..layers import DropPath
from ..layers.fold import _BN, fold_bn_after, fold_bn_before


def _fuse_pairs(module: nn.Module) -> int:
    n = 0
    for child in module.modules():
        conv, bn = getattr(child, "conv", None), getattr(child, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):  # ConvNormAct
            fold_bn_after(conv, bn)
            child.bn = nn.Identity()
            n += 1
        hidden, norm = getattr(child, "hidden", None), getattr(child, "norm", None)
        if isinstance(hidden, nn.Linear) and isinstance(norm, nn.BatchNorm1d):  # V4 head
            fold_bn_after(hidden, norm)
            child.norm = nn.Identity()
            n += 1
        if isinstance(child, nn.Sequential):  # generic Conv2d/Linear -> BN pairs
            names = list(child._modules)
            for a, b in zip(names, names[1:]):
                la, lb = child._modules[a], child._modules[b]
                if isinstance(la, (nn.Conv2d, nn.Linear)) and isinstance(lb, _BN) \
                        and not isinstance(la, nn.ConvTranspose2d):
                    fold_bn_after(la, lb)
                    child._modules[b] = nn.Identity()
                    n += 1
        if isinstance(child, MobileMQA) and isinstance(child.norm, nn.BatchNorm2d):
            a = child.attn
            if a.kv_stride == 1 and a.query_stride == 1:
                for conv in (a.q, a.k, a.v):
                    fold_bn_before(child.norm, conv)
                child.norm = nn.Identity()
                n += 1
    return n


def _remove_noops(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, (nn.Dropout, DropPath)):
            setattr(module, name, nn.Identity())
        else:
            _remove_noops(child)


def fuse(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fold BatchNorms and remove inference no-ops; returns the model in eval mode.

    The result computes the same function as ``model.eval()`` (to float rounding) and is
    meant for inference and export: it cannot be trained as the original (no BN statistics).

    Args:
        model: any model of this library.
        inplace: modify ``model`` itself instead of a deep copy.
    """
    m = model if inplace else copy.deepcopy(model)
    m.eval()
    _fuse_pairs(m)
    _remove_noops(m)
    m.fused = True
    return m
