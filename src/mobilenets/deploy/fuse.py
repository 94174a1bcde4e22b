"""Inference-time graph simplification (BatchNorm folding, no-op removal): the deploy-side
name of :func:`mobilenets.models.fuse.fuse` and the fold primitives of
:mod:`mobilenets.layers.fold`. The pass lives below the models (so ``model.fuse()`` needs no
deploy import); deploy re-exports it as ``mobilenets.deploy.fuse``."""

from __future__ import annotations

from ..layers.fold import fold_bn_after, fold_bn_before
from ..models.fuse import fuse

__all__ = ["fold_bn_after", "fold_bn_before", "fuse"]
