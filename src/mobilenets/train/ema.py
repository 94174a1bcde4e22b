"""The exponential moving average of a model's weights (:class:`ModelEma`) and the average of
the last checkpoints (:func:`average_state_dicts`)."""

from __future__ import annotations

import copy
from typing import Mapping, Sequence

import torch
import torch.nn as nn


# --- EMA and checkpoint averaging ----------------------------------------------------------------
class ModelEma:
    """Exponential moving average of a model's weights and buffers.

    ``ema = d * ema + (1 - d) * weights`` after every optimizer step, with
    ``d = min(decay, (1 + t) / (10 + t))`` when ``warmup`` (so early averages are not dominated by
    the random init). Integer buffers (BatchNorm's counters) are copied.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        self.updates += 1
        src = model.state_dict()
        for k, v in self.module.state_dict().items():
            s = src[k].detach()
            if v.dtype.is_floating_point:
                v.mul_(d).add_(s.to(v.dtype), alpha=1 - d)
            else:
                v.copy_(s)

    def state_dict(self) -> dict:
        return {"state_dict": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, d: Mapping) -> None:
        self.module.load_state_dict(d["state_dict"])
        self.updates = int(d["updates"])


def average_state_dicts(state_dicts: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating-point tensors; other tensors come from the last one
    (torchvision's ``average_checkpoints``)."""
    if not state_dicts:
        raise ValueError("average_state_dicts: no state dicts given")
    keys = list(state_dicts[-1])
    for i, sd in enumerate(state_dicts):
        if list(sd) != keys:
            raise ValueError(f"average_state_dicts: state dict {i} has different keys")
    out = {}
    for k in keys:
        last = state_dicts[-1][k]
        if last.dtype.is_floating_point:
            out[k] = (sum(sd[k].double() for sd in state_dicts) / len(state_dicts)).to(last.dtype)
        else:
            out[k] = last.clone()
    return out
