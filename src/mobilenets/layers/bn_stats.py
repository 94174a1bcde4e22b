"""BatchNorm running statistics taken from data: for test and benchmark models with random
weights, which must stay numerically well conditioned."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

_BN = nn.modules.batchnorm._BatchNorm


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

    was_training = model.training
    hooks = [m.register_forward_pre_hook(calibrate) for m in model.modules()
             if isinstance(m, _BN) and m.running_mean is not None]
    try:
        model.eval()
        model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return model
