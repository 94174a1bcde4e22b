"""Squeeze-and-excite, layer scale, stochastic depth."""

from __future__ import annotations

import torch
import torch.nn as nn

from .activations import ActLike, get_act


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite in the MobileNetV3 form (paper section 5.3): global average pool,
    1x1 conv to ``rd_chs`` + ReLU, 1x1 conv back + hard-sigmoid gate, multiply.

    Args:
        chs: channels of the gated tensor.
        rd_chs: reduced (squeeze) channels; V3 uses ``make_divisible(chs / 4, 8)``.
        act: activation between the two convs.
        gate: gate activation.
    """

    def __init__(self, chs: int, rd_chs: int, act: ActLike = "relu", gate: ActLike = "hard_sigmoid"):
        super().__init__()
        self.fc1 = nn.Conv2d(chs, rd_chs, 1, bias=True)
        self.act = get_act(act, inplace=True)
        self.fc2 = nn.Conv2d(rd_chs, chs, 1, bias=True)
        self.gate = get_act(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class LayerScale(nn.Module):
    """Per-channel learnable scale (CaiT), used on MobileNetV4 hybrid UIB and attention
    blocks with init 1e-5 (MobileNetV4 paper, Qin et al. 2024, section 5; timm's MobileNetV4). Works on NCHW tensors."""

    def __init__(self, chs: int, init_value: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((chs,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Drop whole residual branches per sample (stochastic depth, Huang et al. 2016)."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """Module form of :func:`drop_path`; the rate grows linearly with depth across a model
    (``rate * block_index / num_blocks``)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
