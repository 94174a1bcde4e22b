"""Fast CPU deployment: BatchNorm folding and verified ONNX export (INT8 to come)."""

from .fuse import fold_bn_after, fold_bn_before, fuse

__all__ = ["fold_bn_after", "fold_bn_before", "fuse"]
from .onnx_export import export_onnx  # noqa: E402

__all__ += ["export_onnx"]
