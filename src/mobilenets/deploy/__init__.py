"""Fast CPU deployment: BatchNorm folding (more to come: ONNX export, INT8)."""

from .fuse import fold_bn_after, fold_bn_before, fuse

__all__ = ["fold_bn_after", "fold_bn_before", "fuse"]
