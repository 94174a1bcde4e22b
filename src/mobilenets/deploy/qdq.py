"""ONNX Runtime's static QDQ quantization of an fp32 ``.onnx`` file into another (:func:`quantize_file`):
the graph passes that make every op quantizable, ONNX Runtime's pre-processing, calibration,
``quantize_static`` and the clean-up, then one run of the result. :func:`~mobilenets.deploy.quantize_onnx`
(a model or a file, written atomically) and the ONNX Runtime
:class:`~mobilenets.deploy.mobile.Runtime` (its INT8 files) both use it; the choices behind each
default are in :mod:`mobilenets.deploy.ptq`.
"""

from __future__ import annotations

import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from . import onnx_passes
from .calibration import Calibration, _as_batches
from .onnx_passes import (_dequantize_outputs, _drop_unused_initializers, _graph_input, _repeat_multiplier_dw_inputs,
                          _spatial_means_as_global_pool, _unshare_initializers)
from .ort import _quiet_ort_python_logging, ort_session

METHODS = ("minmax", "entropy", "percentile")
ACTIVATION_TYPES = ("uint8", "int8")
WEIGHT_TYPES = ("int8", "uint8")


def _pre_process(src: Path, dst: Path) -> Path:
    """ONNX Runtime's recommended pre-processing (shape inference + graph optimization). It
    matters for h-swish: with every tensor typed, the quantizer also quantizes the ``x *
    hardsigmoid(x)`` product, and MobileNetV3's 19 h-swish ``Mul`` run as ``QLinearMul``
    instead of float between DQ and Q. Without it the graph is quantized as is."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        with _quiet_ort_python_logging():
            quant_pre_process(str(src), str(dst))
        return dst
    except Exception as e:  # noqa: BLE001 - an optional step: quantize the unprocessed graph
        warnings.warn(f"ONNX Runtime pre-processing failed ({type(e).__name__}: {str(e)[:120]}); quantizing the "
                      f"graph as exported", stacklevel=3)
        return src



def quantize_file(src: Union[str, Path], dst: Union[str, Path], calibration: Calibration, *,
                  per_channel: bool = True, method: str = "minmax", activation_type: str = "uint8",
                  weight_type: str = "int8", reduce_range: bool = True, float_output: bool = True,
                  exclude_nodes: Sequence[str] = (), verify: bool = True) -> None:
    """Quantize the fp32 ONNX file ``src`` into ``dst`` (QDQ; the arguments as
    :func:`~mobilenets.deploy.quantize_onnx`'s), calibrated on ``calibration`` (images of the
    file's input shape, or batches of them). ``dst`` is written in place (the caller makes it
    atomic); without metadata."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    cmethod = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory(prefix="mobilenets-int8-") as tmpdir:
        proto = onnx.load(str(src))
        name, dims = _graph_input(proto)
        if len(dims) != 4:
            raise ValueError(f"{src}: expected an image model with a 4-D input, got input {name!r} {dims}")
        batches = _as_batches(calibration, dims[1:], dims[0])
        _unshare_initializers(proto)
        _repeat_multiplier_dw_inputs(proto)
        _spatial_means_as_global_pool(proto)
        _drop_unused_initializers(proto)
        prepared = Path(tmpdir) / "prepared.onnx"
        onnx.save(proto, str(prepared))
        prepared = _pre_process(prepared, Path(tmpdir) / "preprocessed.onnx")

        class _Reader(CalibrationDataReader):
            def __init__(self):
                self._it = iter([{name: b} for b in batches])

            def get_next(self):
                return next(self._it, None)

        extra: dict[str, Any] = {}
        if method == "percentile":
            extra["CalibPercentile"] = 99.999

        tmp = str(dst)
        with _quiet_ort_python_logging():
            quantize_static(str(prepared), tmp, _Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, reduce_range=reduce_range,
                            activation_type=qtype[activation_type], weight_type=qtype[weight_type],
                            calibrate_method=cmethod, nodes_to_exclude=list(exclude_nodes),
                            extra_options=extra)
        onnx_passes.finalize_qdq(tmp)  # any bias ONNX Runtime left float would keep its conv in float
        if float_output:
            _dequantize_outputs(tmp)
        if verify:
            _verify_int8(tmp, name, batches[0])


def _verify_int8(path: str, input_name: str, batch: np.ndarray) -> None:
    import onnx

    m = onnx.load(path)
    ops = Counter(n.op_type for n in m.graph.node)
    if not ops.get("DequantizeLinear"):
        raise RuntimeError(f"quantization produced no quantized operators (ops: {dict(ops)})")
    sess = ort_session(path, threads=1)
    outs = sess.run(None, {input_name: batch})
    if not all(np.isfinite(o).all() for o in outs):
        raise RuntimeError("the INT8 model produced non-finite outputs on the calibration images")

