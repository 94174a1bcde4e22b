"""Post-training static INT8 quantization (:func:`quantize_onnx`): a QDQ ONNX model that ONNX
Runtime runs with integer kernels.

The pipeline
    The model is exported fp32 with BatchNorms folded (:func:`~mobilenets.deploy.export_onnx`),
    pre-processed (``quant_pre_process``: typed tensors let MobileNetV3's h-swish products be
    quantized too), activation ranges are calibrated by ONNX Runtime on a few hundred images,
    and ``onnxruntime.quantization.quantize_static`` writes a QDQ model (QuantizeLinear /
    DequantizeLinear pairs around every Conv / Gemm / Add / Mul). At session start ONNX Runtime
    rewrites each ``DQ -> Conv -> (Relu|Clip) -> Q`` group into one ``QLinearConv`` (``QGemm``,
    ``QLinearAdd``, ``QLinearMul`` likewise): :func:`int8_op_counts` shows the rewritten graph.

Data types (the measurements behind each default: benchmarks/INT8.md, "Design measurements")
    * activations ``uint8`` (asymmetric), weights ``int8`` (symmetric, per output channel):
      ONNX Runtime's fast x86 path (``QLinearConv`` u8s8, the symmetric "ConvSym" kernels).
      ``int8`` activations ran slower than ``uint8``; ``uint8`` weights were no faster and
      need a zero point per channel.
    * ``per_channel=True`` (default): same speed as per-tensor within noise, and per-tensor
      weights lose accuracy on depthwise convs, whose channels have very different ranges.
    * ``reduce_range=True`` (default): weights on 7 bits (``[-64, 64]``). x86 CPUs without
      VNNI multiply u8 x s8 with ``vpmaddubsw``, which adds pairs of products in int16 and
      saturates when both are large (255 x 127 x 2 > 32767): with full-range weights ONNX
      Runtime's integer result then differs from the QDQ graph it runs, with 7-bit weights it is
      exact. 7-bit weights are safe on every CPU; pass ``reduce_range=False``
      for VNNI / ARM targets, where full 8-bit weights halve the weight rounding error
      (:func:`~mobilenets.deploy.kernel_vs_qdq` checks a file's kernels on the CPU it runs on).
    * Without VNNI an x86 core multiplies u8 x s8 pairs at about the fp32 FMA rate
      (``vpmaddubsw`` + ``vpmaddwd`` against one ``vfmadd``), so INT8 on this CPU is roughly as
      fast as ONNX Runtime's very good fp32 NCHWc kernels: the gain is in file size (4x) and
      memory traffic, not in arithmetic. VNNI / AMX CPUs (Zen 4, Ice Lake and later) and ARM
      dot-product CPUs are where INT8 pays off.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence, Union

import torch.nn as nn

from ..models.info import model_info
from ..weights.io import atomic_write
from .calibration import NO_CALIBRATION, Calibration, _as_batches
from .onnx_export import MAX_OPSET, export_onnx, read_model_info, write_model_info
from .onnx_passes import MIN_QDQ_OPSET
from .ort import _require_ort, read_onnx
from .qdq import ACTIVATION_TYPES, METHODS, WEIGHT_TYPES, quantize_file  # noqa: F401  (re-exported)



def quantize_onnx(model_or_path: Union[nn.Module, str, os.PathLike], out: Union[str, os.PathLike],
                  calibration: Calibration, input_size: Sequence[int] = (224, 224),
                  dynamic_batch: bool = False, per_channel: bool = True, method: str = "minmax",
                  opset: int = 17, *, activation_type: str = "uint8", weight_type: str = "int8",
                  reduce_range: bool = True, float_output: bool = True,
                  exclude_nodes: Sequence[str] = (), verify: bool = True) -> Path:
    """Static post-training INT8 quantization (QDQ format) with ONNX Runtime.

    Args:
        model_or_path: a model of this library (exported fp32 first, BatchNorms folded) or an
            fp32 ``.onnx`` file (its own input size and batch are used).
        out: output ``.onnx`` file, written atomically (nothing is left there on failure).
        calibration: images normalized as the model expects, ``(N, C, H, W)``: a tensor, or an
            iterable of tensors or ``(images, labels)`` batches (a DataLoader). A few hundred
            images of the deployment distribution; :func:`calibration_batches` builds them.
        input_size: ``(H, W)`` of the export (model input only).
        dynamic_batch: symbolic batch dimension (model input only).
        per_channel: per-output-channel weight scales (recommended: depthwise convs need them).
        method: activation range calibration, one of ``minmax`` (default; safest for ReLU6
            nets), ``entropy``, ``percentile`` (99.999 %).
        opset: ONNX opset of the export, 13-20 (per-channel QDQ needs 13).
        activation_type, weight_type: ``uint8`` / ``int8`` (defaults: u8 activations x s8
            weights, ONNX Runtime's fast x86 path; see :mod:`mobilenets.deploy.ptq`).
        reduce_range: 7-bit weights (default): exact on x86 CPUs without VNNI, whose u8s8
            kernels saturate with full-range weights (see :mod:`mobilenets.deploy.ptq`); ``False`` for
            VNNI / ARM targets.
        float_output: keep the last layer's output (the logits) in float rather than uint8.
        exclude_nodes: ONNX node names to keep in float.
        verify: run the written model once with ONNX Runtime and check that it contains
            quantized operators.

    Returns:
        The path written.

    Raises:
        ValueError: no / empty / wrongly shaped calibration data, unknown method or type,
            unsupported opset, bad output name. ImportError: onnxruntime or onnx missing.
    """
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {list(METHODS)}")
    if not MIN_QDQ_OPSET <= int(opset) <= MAX_OPSET:
        raise ValueError(f"unsupported opset {opset} for INT8 QDQ export; choose one of "
                         f"{list(range(MIN_QDQ_OPSET, MAX_OPSET + 1))} (17 is a good default)")
    if activation_type not in ACTIVATION_TYPES or weight_type not in WEIGHT_TYPES:
        raise ValueError(f"activation_type must be one of {list(ACTIVATION_TYPES)} and weight_type one of "
                         f"{list(WEIGHT_TYPES)}, got {activation_type!r}, {weight_type!r}")
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"output file must end in .onnx, got {out.name!r}")
    if calibration is None:
        raise ValueError(NO_CALIBRATION)
    _require_ort()
    is_module = isinstance(model_or_path, nn.Module)
    if not is_module:
        src = Path(model_or_path)
        read_onnx(src)  # a missing file or one that is not ONNX fails here, naming the file
    else:
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        if len(input_size) != 2:
            raise ValueError(f"input_size must be (H, W), got {tuple(input_size)}")
        in_chans = model_info(model_or_path).in_chans
        shape = (in_chans, int(input_size[0]), int(input_size[1]))
        batches = _as_batches(calibration, shape, None if dynamic_batch else 1)  # fail before exporting

    with tempfile.TemporaryDirectory(prefix="mobilenets-int8-") as tmpdir:
        fp32 = Path(tmpdir) / "fp32.onnx"
        if is_module:
            export_onnx(model_or_path, fp32, input_size=input_size, opset=opset, dynamic_batch=dynamic_batch)
        options = dict(per_channel=per_channel, method=method, activation_type=activation_type,
                       weight_type=weight_type, reduce_range=reduce_range, float_output=float_output,
                       exclude_nodes=exclude_nodes, verify=verify)

        def write(tmp: str) -> None:
            quantize_file(fp32 if is_module else src, tmp, batches if is_module else calibration, **options)
            if is_module:  # the fp32 export's record (the quantizer does not carry metadata over)
                info = read_model_info(fp32)
                if info is not None:
                    write_model_info(tmp, info)

        return atomic_write(out, write)
