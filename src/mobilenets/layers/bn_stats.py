"""BatchNorm running statistics: taken from data for test and benchmark models with random
weights, which must stay numerically well conditioned; eps / momentum of a whole model."""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
from torch.utils.hooks import RemovableHandle

_BN = nn.modules.batchnorm._BatchNorm


def set_bn(model: nn.Module, eps: Optional[float] = None, momentum: Optional[float] = None) -> int:
    """Set eps / momentum of every BatchNorm in ``model`` (``None``: keep); returns how many.

    Any module tree (a detector with torchvision heads too); ``Backbone.set_bn`` is this."""
    n = 0
    for m in model.modules():
        if isinstance(m, _BN):
            if eps is not None:
                m.eps = eps
            if momentum is not None:
                m.momentum = momentum
            n += 1
    return n


def check_batch_stats(x: torch.Tensor, training: bool, where: str) -> None:
    """Before a BatchNorm over pooled vectors (one value per channel and image) in training
    mode: a batch of one image has no batch statistics. Raise a ``ValueError`` that says what to
    do (``model.eval()`` for inference) instead of BatchNorm's "Expected more than 1 value per
    channel when training".

    ``torch.fx.wrap``-ed where it is called, so symbolic tracing records one call instead of
    branching on a traced shape.
    """
    if training and x.shape[0] == 1:
        raise ValueError(f"{where}: a batch of 1 image in training mode: the BatchNorm over pooled features "
                         f"needs more than one image per batch to compute batch statistics. For inference call "
                         f"model.eval() first (models are created in training mode, as in timm and "
                         f"torchvision); to train, use a batch of 2 or more")


@torch.no_grad()
def calibrate_bn_stats(model: nn.Module, x: torch.Tensor, generator: Optional[torch.Generator] = None,
                       mean_jitter: float = 0.2, var_range: tuple[float, float] = (0.7, 1.4)) -> nn.Module:
    """Set every BatchNorm's running mean / variance, just before it runs in one eval-mode
    forward pass on ``x``, to the statistics of its real input, perturbed per channel (mean
    shifted by up to ``mean_jitter`` standard deviations, variance scaled within ``var_range``)
    so they are not the trivial ones.

    Random weights with statistics drawn blindly grow activations by a constant factor per layer
    (to ~1e9 at the end of a MobileNetV4-Hybrid), where fp32 rounding differences between two
    correct kernels decide the output; with calibrated statistics every normalised output is
    O(1). Returns ``model`` (its train/eval mode restored).
    """
    def calibrate(bn: nn.Module, args) -> None:
        (inp,) = args
        dims = [0, *range(2, inp.ndim)]  # every dim but the channel dim
        mean, var = inp.mean(dims), inp.var(dims, unbiased=False)
        n = mean.numel()
        lo, hi = var_range
        bn.running_mean.copy_(mean + mean_jitter * var.sqrt() * (torch.rand(n, generator=generator) * 2 - 1))
        bn.running_var.copy_(var * (torch.rand(n, generator=generator) * (hi - lo) + lo))

    eval_pass_with_hooks(model, x, lambda m: m.register_forward_pre_hook(calibrate)
                         if isinstance(m, _BN) and m.running_mean is not None else None)
    return model


@torch.no_grad()
def eval_pass_with_hooks(model: nn.Module, x: torch.Tensor,
                         register: Callable[[nn.Module], Optional[RemovableHandle]]) -> None:
    """One eval-mode forward pass of ``x`` with the hooks ``register(module)`` installs (a
    handle, or None to skip the module); the hooks are removed and the train/eval mode restored
    afterwards, whatever happens."""
    was_training = model.training
    hooks = [h for h in map(register, model.modules()) if h is not None]
    try:
        model.eval()
        model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
