"""ONNX export, verified with ONNX Runtime: :class:`OnnxRuntime`, the ONNX Runtime
:class:`~mobilenets.deploy.mobile.Runtime`, and :func:`export_onnx`.

The graph is exported from the fused model (BatchNorms folded, no-ops removed), with the
export forms of its modules swapped in (:mod:`.export_swaps`), by the TorchScript-based
exporter, through the one export driver: the file is written atomically (temp file + rename),
so an interrupted or failed export never leaves a half-written model behind, then run in ONNX
Runtime and compared with eager.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..extras import require
from ..models.info import ModelInfo
from ..onnxrt import ort_session
from .mobile import Lowered, Runtime

MIN_OPSET, MAX_OPSET = 13, 20


def export_onnx(model: nn.Module, path: Union[str, Path], input_size: Sequence[int] = (224, 224),
                opset: int = 17, dynamic_batch: bool = False, fused: bool = True,
                verify: bool = True, atol_rel: float = 1e-4) -> Path:
    """Export ``model`` to ONNX at ``path`` (through the one export driver,
    :func:`~mobilenets.deploy.export_mobile`, with :class:`OnnxRuntime`).

    Args:
        model: any model of this library: a classifier (output ``logits``), a ``features_only``
            extractor (``features_<i>``) or a segmenter (its dict's keys: ``out``, ``aux``).
        path: output ``.onnx`` file (written atomically).
        input_size: ``(H, W)`` of the traced input (the graph is fixed to it unless dynamic).
        opset: ONNX opset, 13-20.
        dynamic_batch: make the batch dimension symbolic.
        fused: fold BatchNorms first (recommended; the math is the same).
        verify: run the file with ONNX Runtime and compare with eager; raise if max |diff| >
            ``atol_rel`` x max |eager| on any output.

    Returns:
        The path written.

    Raises:
        ValueError: unsupported opset or input size. RuntimeError: verification failed.
        MissingDependencyError: onnx (or, to verify, onnxruntime) is not installed.
    """
    from .mobile import export_mobile

    path = check_export_args(path, input_size, opset)
    runtime = OnnxRuntime(opset=opset, dynamic_batch=dynamic_batch, verify=verify)
    return export_mobile(runtime, model, path, input_size, batch_size=2 if dynamic_batch else 1, verify=verify,
                         atol_rel=atol_rel, fused=fused).path


def output_names(out) -> list[str]:
    """The ONNX output names of a model's output: a dict's keys (a segmenter: ``out``, ``aux``),
    ``features_<i>`` for a list (``features_only``), else ``logits``."""
    if isinstance(out, dict):
        return list(out)
    if isinstance(out, (list, tuple)):
        return [f"features_{i}" for i in range(len(out))]
    return ["logits"]


class OnnxRuntime(Runtime):
    """ONNX Runtime (CPU) as a :class:`~mobilenets.deploy.mobile.Runtime`: the TorchScript-based
    exporter with the ``"onnx"`` export forms, every output kept under its name (input
    ``input``); INT8 is ONNX Runtime's static QDQ quantization of the fp32 file
    (:func:`~mobilenets.deploy.qdq.quantize_file`, :func:`~mobilenets.deploy.quantize_onnx`'s defaults) calibrated on the driver's images. The
    file records the model's :class:`ModelInfo` in its metadata.

    Args:
        opset: 13-20. dynamic_batch: a symbolic batch dimension. verify: whether ONNX Runtime
            will run the file (``require`` then asks for onnxruntime too).
    """

    name, label, suffix = "onnx", "ONNX Runtime", ".onnx"
    backend = "ONNX Runtime"
    complete = "every op in ONNX Runtime"
    int8_reference = "the fp32 export"
    forms = "onnx"
    main_output = False
    checked = "checked with ONNX Runtime"

    def __init__(self, opset: int = 17, dynamic_batch: bool = False, verify: bool = True):
        self.opset, self.dynamic_batch, self.verify = int(opset), bool(dynamic_batch), verify

    def require(self) -> None:
        require("onnx", "ONNX export")
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ValueError(f"unsupported opset {self.opset}; expected {MIN_OPSET}..{MAX_OPSET} (17 is a good default)")
        if self.verify:
            require("onnxruntime", "checking the exported ONNX file with ONNX Runtime (verify=False skips it)")

    #: quantize_onnx's activation range methods, its default first
    calib_methods = ("minmax", "entropy", "percentile")

    def quantize(self, net, x, images, float_layers=(), calib_method=None):
        if float_layers:
            raise ValueError("float layers (mixed precision) are for INT8 exports to executorch or tflite")
        return net, {"calibration": images, "method": calib_method or self.calib_methods[0]}

    def lower(self, net, x, options, model_name, info=None) -> Lowered:
        import io

        onnx = require("onnx", "ONNX export")
        with torch.no_grad():
            names = output_names(net(x))
        axes = {"input": {0: "batch"}, **{n: {0: "batch"} for n in names}} if self.dynamic_batch else None
        buf = io.BytesIO()
        with warnings.catch_warnings():  # the input-shape check is a constant in the traced graph
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(net, (x,), buf, input_names=["input"], output_names=names,
                              opset_version=self.opset, dynamic_axes=axes, do_constant_folding=True, dynamo=False)
        data = buf.getvalue()
        ops = dict(Counter(n.op_type for n in onnx.load_from_string(data).graph.node))
        calibration, method = options.get("calibration"), options.get("method", self.calib_methods[0])

        def write(tmp: str) -> None:
            if calibration is None:
                Path(tmp).write_bytes(data)
                return
            from .qdq import quantize_file
            with tempfile.TemporaryDirectory(prefix="mobilenets-onnx-") as d:
                (Path(d) / "fp32.onnx").write_bytes(data)
                quantize_file(Path(d) / "fp32.onnx", tmp, calibration, method=method)
            ops.clear()  # the quantized file's operators
            ops.update(Counter(n.op_type for n in onnx.load(tmp).graph.node))
        return Lowered(write, ops)

    def runner(self, path: str, threads: Optional[int] = None) -> Callable[[torch.Tensor], list]:
        sess = ort_session(path, threads=threads or 0, feature="checking the exported ONNX file with ONNX Runtime")
        return lambda x: [torch.from_numpy(o) for o in sess.run(None, {"input": x.numpy()})]

    def write_info(self, path: str, info: ModelInfo) -> None:
        write_model_info(path, info)


#: the ONNX ``metadata_props`` key holding the exported model's :class:`ModelInfo` (JSON)
MODEL_INFO_KEY = "mobilenets.model_info"


def write_model_info(file: Union[str, Path], info: ModelInfo) -> None:
    """Record ``info`` (name, task, classes, preprocessing) in an ONNX file's metadata, so a
    runtime reads how to feed the model from the file itself (:func:`read_model_info`)."""
    onnx = require("onnx", "ONNX export")
    proto = onnx.load(str(file))
    for p in [p for p in proto.metadata_props if p.key == MODEL_INFO_KEY]:
        proto.metadata_props.remove(p)
    proto.metadata_props.add(key=MODEL_INFO_KEY, value=json.dumps(info.to_dict()))
    onnx.save(proto, str(file))


def read_model_info(file: Union[str, Path]) -> Optional[ModelInfo]:
    """The :class:`ModelInfo` an exported ``.onnx``, ``.tflite`` or ``.pte`` file records
    (None: a file without one)."""
    if Path(file).suffix.lower() == ".tflite":
        from .litert_export import read_tflite_model_info
        require("ai_edge_litert", "reading a .tflite file's metadata")
        return read_tflite_model_info(file)
    if Path(file).suffix.lower() == ".pte":
        from .executorch_export import read_pte_model_info
        require("executorch.runtime", "reading a .pte program's model_info")
        return read_pte_model_info(file)
    onnx = require("onnx", "reading an ONNX file's metadata")
    proto = onnx.load(str(file), load_external_data=False)
    for p in proto.metadata_props:
        if p.key == MODEL_INFO_KEY:
            return ModelInfo.from_dict(json.loads(p.value))
    return None


def check_export_args(path: Union[str, Path], input_size: Sequence[int], opset: int,
                      min_opset: int = MIN_OPSET) -> Path:
    """The output path, after ``ValueError`` for an opset outside ``min_opset..MAX_OPSET``, an
    input size that is not ``(H, W)`` with H, W >= 32, or a file name not ending in ``.onnx``;
    :class:`~mobilenets.extras.MissingDependencyError` without the onnx package."""
    require("onnx", "ONNX export")
    if not min_opset <= int(opset) <= MAX_OPSET:
        raise ValueError(f"unsupported opset {opset}; expected {min_opset}..{MAX_OPSET} (17 is a good default)")
    if len(input_size) != 2 or min(input_size) < 32:
        raise ValueError(f"input_size must be (H, W) with H, W >= 32, got {tuple(input_size)}")
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"output file must end in .onnx, got {path.name!r}")
    return path
