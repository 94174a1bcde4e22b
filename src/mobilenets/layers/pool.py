"""Global pooling of a classifier head, with timm's pool types (``global_pool=``).

``""`` keeps the map (no pooling: the head then works per position, as timm's heads do with
pooling disabled); ``"avg"`` and ``"max"`` pool each channel; ``"avgmax"`` is their mean;
``"catavgmax"`` concatenates them (twice the channels: :meth:`GlobalPool.feat_mult`).
"""

import torch
import torch.nn as nn

POOL_TYPES = ("", "avg", "max", "avgmax", "catavgmax")


class UnsupportedPoolError(ValueError, AssertionError):
    """A pool type a head cannot take (a ``ValueError``; an ``AssertionError`` too, which is what
    timm raises for the same request, so code written for timm catches it)."""


def check_pool_type(pool_type: str) -> str:
    """``pool_type`` after a :class:`UnsupportedPoolError` naming the choices for another value."""
    if pool_type not in POOL_TYPES:
        raise UnsupportedPoolError(f"global_pool must be one of {', '.join(repr(p) for p in POOL_TYPES)}, "
                                   f"got {pool_type!r}")
    return pool_type


class GlobalPool(nn.Module):
    """``(N, C, H, W)`` -> ``(N, C * feat_mult())`` (``pool_type=""``: the map unchanged).

    Args:
        pool_type: one of :data:`POOL_TYPES`.
    """

    def __init__(self, pool_type: str = "avg"):
        super().__init__()
        self.pool_type = check_pool_type(pool_type)

    def feat_mult(self) -> int:
        """Channels out per channel in: 2 for ``"catavgmax"``, else 1."""
        return 2 if self.pool_type == "catavgmax" else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "avg":
            return x.mean((2, 3))
        if self.pool_type == "max":
            return x.amax((2, 3))
        if self.pool_type == "avgmax":
            return 0.5 * (x.mean((2, 3)) + x.amax((2, 3)))
        if self.pool_type == "catavgmax":
            return torch.cat([x.mean((2, 3)), x.amax((2, 3))], dim=1)
        return x

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"
