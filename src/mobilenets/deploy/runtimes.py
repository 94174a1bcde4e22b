"""The export formats and their :class:`~mobilenets.deploy.mobile.Runtime` objects: what
``mobilenets export --format`` and the architecture search's latency tables name."""

from __future__ import annotations

#: ``mobilenets export --format`` -> the file suffix
EXPORT_FORMATS = {"onnx": ".onnx", "executorch": ".pte", "tflite": ".tflite"}
#: the runtimes' names, for messages
FORMAT_LABELS = {"onnx": "ONNX", "executorch": "ExecuTorch", "tflite": "LiteRT"}


def runtime_for(fmt: str, opset: int = 17, dynamic_batch: bool = False):
    """The :class:`~mobilenets.deploy.mobile.Runtime` of an export format (``onnx``,
    ``executorch``, ``tflite``)."""
    if fmt == "onnx":
        from .onnx_export import OnnxRuntime
        return OnnxRuntime(opset=opset, dynamic_batch=dynamic_batch)
    if dynamic_batch:
        raise ValueError(f"--format {fmt} writes a fixed-shape file (batch 1): drop --dynamic-batch")
    if fmt == "executorch":
        from .executorch_export import EXECUTORCH
        return EXECUTORCH
    if fmt == "tflite":
        from .litert_export import LITERT
        return LITERT
    raise ValueError(f"unsupported format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")


#: the on-device runtimes by name (``"litert"`` or its format ``"tflite"``) -> export format
QAT_RUNTIMES = {"executorch": "executorch", "litert": "tflite", "tflite": "tflite"}


def mobile_runtime(runtime):
    """The :class:`~mobilenets.deploy.mobile.Runtime` of an on-device runtime with a PT2E
    quantizer (``"executorch"``, ``"litert"`` / ``"tflite"``); a Runtime is returned as is."""
    if isinstance(runtime, str):
        if runtime not in QAT_RUNTIMES:
            raise ValueError(f"PT2E quantization-aware training is for the on-device runtimes executorch, litert; "
                             f"got {runtime!r} (ONNX Runtime has its own: mobilenets.deploy.prepare_qat)")
        return runtime_for(QAT_RUNTIMES[runtime])
    return runtime
