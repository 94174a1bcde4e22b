"""RMSNorm over the channels of an NCHW map (MobileNetV5's normalisation)."""

from __future__ import annotations

import torch
import torch.nn as nn


class RMSNorm2d(nn.Module):
    """Root-mean-square normalisation across channels (Zhang & Sennrich 2019,
    https://arxiv.org/abs/1910.07467) at every position of an NCHW map:
    ``x / sqrt(mean_c(x^2) + eps) * weight``. No mean subtraction, no bias, no running
    statistics: it normalises each position by itself, in training and inference alike (so it
    does not fold into a neighbouring conv). MobileNetV5 (Gemma 3n; timm's ``RmsNorm2d``) uses
    it everywhere BatchNorm would be, with eps 1e-6.

    Args:
        chs: channels. eps: added to the mean square.
    """

    def __init__(self, chs: int, eps: float = 1e-6):
        super().__init__()
        if chs < 1 or not eps > 0:
            raise ValueError(f"RMSNorm2d needs chs >= 1 and eps > 0, got chs={chs}, eps={eps}")
        self.num_features, self.eps = chs, eps
        self.weight = nn.Parameter(torch.ones(chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the order of timm's rms_norm2d (normalise, then scale), so fp32 roundings agree
        x = x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + self.eps)
        return x * self.weight.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"
