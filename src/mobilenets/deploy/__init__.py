"""Fast CPU deployment: BatchNorm folding, verified ONNX export, INT8 quantization (PTQ and QAT)."""

from .fuse import fold_bn_after, fold_bn_before, fuse

__all__ = ["fold_bn_after", "fold_bn_before", "fuse"]
from .onnx_export import export_onnx, read_model_info  # noqa: E402

__all__ += ["export_onnx", "read_model_info"]
from .calibration import calibration_batches  # noqa: E402
from .ort import (KernelCheck, OnnxFileError, agreement, cosine, int8_op_counts, kernel_vs_qdq,  # noqa: E402
                  onnx_logits, ort_session, read_onnx)
from .ptq import quantize_onnx  # noqa: E402
from .qat import QATModel, export_qat_onnx, prepare_qat  # noqa: E402

__all__ += ["OnnxFileError", "read_onnx", "quantize_onnx", "calibration_batches", "prepare_qat", "export_qat_onnx", "QATModel", "agreement",
            "cosine", "int8_op_counts", "kernel_vs_qdq", "KernelCheck", "onnx_logits", "ort_session"]
from .cpu import PackedConvAct, onednn_available, optimize_for_cpu  # noqa: E402

__all__ += ["optimize_for_cpu", "PackedConvAct", "onednn_available"]
from .executorch_export import PteRunner, export_executorch, pte_logits  # noqa: E402
from .litert_export import TfliteRunner, export_tflite, tflite_logits, tflite_ops  # noqa: E402
from .mobile import LoweringError, MobileExport, Runtime, export_mobile  # noqa: E402

__all__ += ["export_executorch", "export_tflite", "export_mobile", "Runtime", "MobileExport", "LoweringError",
            "PteRunner", "TfliteRunner", "pte_logits", "tflite_logits", "tflite_ops"]
