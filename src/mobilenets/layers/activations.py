"""Activations by name.

MobileNetV2 uses ReLU6, V3 uses ReLU and hard-swish (h-swish, paper section 5.2) with a
hard-sigmoid gate in SE, V4 uses ReLU (GELU in Hybrid-L). Names are the ones people type.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Union

import torch.nn as nn

ActLike = Union[str, type, Callable[..., nn.Module], None]

ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hswish": nn.Hardswish,
    "hard_swish": nn.Hardswish,
    "h_swish": nn.Hardswish,
    "hsigmoid": nn.Hardsigmoid,
    "hard_sigmoid": nn.Hardsigmoid,
    "h_sigmoid": nn.Hardsigmoid,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "gelu_tanh": partial(nn.GELU, approximate="tanh"),
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "identity": nn.Identity,
    "linear": nn.Identity,
}

# Activations that accept ``inplace``; saves a buffer per call in eager inference.
_INPLACE = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU)


def get_act(act: ActLike, inplace: bool = False) -> nn.Module:
    """Build an activation module from a name, a class, a partial, or ``None`` (identity).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if act is None:
        return nn.Identity()
    if isinstance(act, nn.Module):
        return act
    if isinstance(act, str):
        key = act.lower().replace("-", "_")
        if key not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {act!r}; expected one of {sorted(ACTIVATIONS)}"
            )
        act = ACTIVATIONS[key]
    cls = act.func if isinstance(act, partial) else act
    if inplace and isinstance(cls, type) and issubclass(cls, _INPLACE):
        return act(inplace=True)
    return act()

