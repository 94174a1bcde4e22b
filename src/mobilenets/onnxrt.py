"""The one ONNX Runtime session factory (CPU): every session the library makes, for export
checks, INT8 checks, benchmarks and the cost model's calibration, comes from :func:`ort_session`,
so they all log quietly, take the same thread settings and turn a file that is not a model into
an :class:`OnnxFileError` naming it. In the lowest layer (it needs only ONNX Runtime itself), so
the analysis and the deployment code share it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from .extras import require


class OnnxFileError(ValueError):
    """An ``.onnx`` file that is not a loadable ONNX model (corrupt, empty, not ONNX)."""


def ort_session(model: Union[str, Path, bytes, Any], threads: int = 0, optimized_path: Optional[str] = None,
                optimize: bool = True, spinning: bool = True, feature: str = "running ONNX models"):
    """A CPU ``InferenceSession`` with quiet logging.

    Args:
        model: an ``.onnx`` path, the serialized bytes, or an ``onnx.ModelProto``.
        threads: intra-op threads (0: ONNX Runtime's default), one inter-op thread.
        optimized_path: write the graph ONNX Runtime optimized there.
        optimize: ``False`` runs the graph as written (QDQ simulated in float, no int8 kernels).
        spinning: ``False``: worker threads sleep after a run instead of spinning (ONNX Runtime's
            default keeps them busy-waiting, which steals the cores from whatever runs next: use it
            when timing ONNX Runtime interleaved with other paths).
        feature: what needs ONNX Runtime (the missing-package message names it).

    Raises:
        FileNotFoundError: no such file. OnnxFileError: not a model ONNX Runtime can load.
        MissingDependencyError: onnxruntime is not installed.
    """
    ort = require("onnxruntime", feature)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    if isinstance(model, (str, Path)):
        if not Path(model).is_file():
            raise FileNotFoundError(f"ONNX model not found: {model}")
        source, what = str(model), str(model)
    else:
        source = model if isinstance(model, bytes) else model.SerializeToString()
        what = "the in-memory ONNX model"
    try:
        return ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT raises its own classes (InvalidProtobuf, Fail, ...)
        if not type(e).__module__.startswith("onnxruntime"):
            raise
        raise OnnxFileError(f"{what}: ONNX Runtime cannot load it as a model "
                            f"({str(e).splitlines()[0][:300]})") from None
