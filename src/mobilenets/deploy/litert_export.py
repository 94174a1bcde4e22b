"""LiteRT (TFLite) export through litert-torch, fp32 and INT8, verified by running the file in
ai-edge-litert's ``Interpreter`` (with its default XNNPACK delegate).

Pipeline: fuse -> ``"mobile"`` export forms -> (INT8: PT2E with litert-torch's ``PT2EQuantizer``,
per-channel symmetric int8 weights, static int8 activations, calibrated) ->
``litert_torch.convert`` -> ``.tflite`` written atomically -> run by the Interpreter and
compared with eager. The input stays NCHW, as PyTorch's (the converter adds one transpose to
NHWC); fp32 files take and give float32, INT8 files int8 (:class:`TfliteRunner` converts).

Every operator of the file must be a LiteRT builtin: a custom or Flex (TensorFlow) op is a
:class:`~mobilenets.deploy.mobile.LoweringError` naming it, unless ``allow_fallback=True``.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from ..extras import require
from .mobile import (DEFAULT_CALIB_COUNT, LoweringError, Lowered, MobileExport, Runtime, check_shape, chunks,
                     export_mobile)
from .saturation import aten_ops


def litert_quantizer(qat: bool = False):
    """litert-torch's PT2E quantizer (int8 symmetric per-channel weights, static int8 activations;
    ``qat``: as fake quantization to train through), completed by :func:`annotate_float_gaps` for
    the ops it leaves in float."""
    require("litert_torch", "LiteRT export")
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    class Quantizer(PT2EQuantizer):
        # QAT: no conv + BatchNorm patterns (mobilenets.deploy.qat.pt2e folds the BatchNorms before
        # capture); litert-torch 0.10's annotator for them also fails under torch 2.14 (it hands
        # torch.export a function where a Module is required)
        STATIC_QAT_ONLY_OPS: list = []

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            return annotate_float_gaps(super().annotate(model), self.global_config)

    return Quantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=qat,
                                                                    is_dynamic=False))


# what litert-torch 0.10's quantizer leaves unannotated in our graphs, each with an int8 LiteRT kernel:
# residual adds written `a + b`, hard-swish (MobileNetV3 / V4), and the SE gate's hard-sigmoid,
# which the mobile forms write as relu6(x + 3) / 6. Left in float, every one costs a DEQUANTIZE /
# QUANTIZE pair and a float kernel: MNv3-L's INT8 file ran 2.4x SLOWER than its fp32 file.
_ADDS = aten_ops("add.Tensor", "add_.Tensor")
_CLAMPS = aten_ops("relu.default", "relu_.default", "relu6.default", "hardtanh.default", "hardtanh_.default")
_UNARY = aten_ops("hardswish.default", "hardswish_.default", "hardsigmoid.default", "hardsigmoid_.default",
               "div.Tensor", "mul.Tensor") | _CLAMPS
# ... and concatenation. Left in float between int8 producers, the converter still writes an int8
# CONCATENATION, requantizing every input to ONE input's scale (measured: an SSDLite's six box
# regression levels all clamped to the 1x1 level's range, +-1.2 where the boxes need +-11; mAP75
# 0.76 -> 0.48). Annotated as XNNPACK's quantizer does (inputs and output share one observer), the
# shared scale covers every input and the file computes what the PT2E reference computes.
_CATS = aten_ops("cat.default", "concat.default")


def annotate_float_gaps(gm: torch.fx.GraphModule, config) -> torch.fx.GraphModule:
    """Annotate, for static int8, the activation ops a PT2E quantizer left unannotated (see
    ``_ADDS`` / ``_UNARY``): every floating input observed with ``config``'s input spec, the
    output with its output spec. An add whose only user is a ReLU / ReLU6 gets its output spec
    on that clamp instead (the converter fuses the pair into one int8 ADD). A ``div`` / ``mul`` is
    annotated only by a scalar (the tensor-by-tensor SE ``mul`` is the quantizer's own). Returns
    ``gm``, annotated in place."""
    from litert_torch.quantize.pt2e_quantizer_utils import get_input_act_qspec, get_output_act_qspec
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    in_spec, out_spec = get_input_act_qspec(config), get_output_act_qspec(config)
    if in_spec is None or out_spec is None:  # dynamic quantization: activations stay float
        return gm

    def annotated(node) -> bool:
        ann = node.meta.get("quantization_annotation")
        return ann is not None and ann._annotated

    def mark(node, inputs, output: bool) -> None:
        node.meta["quantization_annotation"] = QuantizationAnnotation(
            input_qspec_map={a: in_spec for a in inputs}, output_qspec=out_spec if output else None,
            _annotated=True)

    for node in gm.graph.nodes:
        if node.op != "call_function" or annotated(node):
            continue
        tensors = [a for a in node.args if isinstance(a, torch.fx.Node)]
        if node.target in _ADDS and len(tensors) == len(node.args) == 2:
            users = list(node.users)
            fused = len(users) == 1 and users[0].target in _CLAMPS and not annotated(users[0])
            mark(node, tensors, output=not fused)
            if fused:
                mark(users[0], [], output=True)
        elif node.target in _UNARY and len(tensors) == 1 and node.args[0] is tensors[0]:
            mark(node, tensors, output=True)
        elif node.target in _CATS and node.args and all(isinstance(a, torch.fx.Node) for a in node.args[0]) \
                and len(node.args[0]) > 1:  # (one tensor repeated too: LiteRT's Mobile MQA form)
            first = node.args[0][0]
            shared = SharedQuantizationSpec((first, node))
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={first: in_spec, **{a: shared for a in node.args[0][1:] if a is not first}},
                output_qspec=shared, _annotated=True)
    return gm


@contextlib.contextmanager
def _quiet():
    """litert-torch prints a progress tree on stdout and warns freely; keep our users' output clean."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def tflite_ops(path_or_bytes: Union[str, os.PathLike, bytes]) -> tuple[dict, dict]:
    """``(builtin op counts, custom / Flex op counts)`` of a ``.tflite`` flatbuffer (all subgraphs)."""
    require("ai_edge_litert", "Reading a .tflite file")
    from ai_edge_litert import schema_py_generated as S

    buf = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    try:
        model = S.Model.GetRootAsModel(buf, 0)
        names = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
        codes = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            custom = oc.CustomCode()
            codes.append((custom.decode(), False) if custom else
                         (names.get(max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()), "?"), True))
        builtin, other = Counter(), Counter()
        for s in range(model.SubgraphsLength()):
            sg = model.Subgraphs(s)
            for j in range(sg.OperatorsLength()):
                name, is_builtin = codes[sg.Operators(j).OpcodeIndex()]
                (builtin if is_builtin and name != "CUSTOM" else other)[name] += 1
    except Exception as e:  # noqa: BLE001 - a corrupt flatbuffer raises anything from struct to IndexError
        raise ValueError(f"not a LiteRT (.tflite) model ({type(e).__name__})") from None
    return dict(builtin), dict(other)


#: LiteRT's ops that carry a weight tensor (their input 1)
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


def tflite_weight_types(path: Union[str, os.PathLike]) -> dict:
    """``{(op, weight type): count}`` of a ``.tflite`` file's convolutions and fully connected
    layers (weight type ``"FLOAT32"``, ``"INT8"``...): which layers an INT8 file keeps float."""
    require("ai_edge_litert", "Reading a .tflite file")
    from ai_edge_litert import schema_py_generated as S

    model = S.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    ops = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(S.TensorType).items() if not k.startswith("_")}
    out: Counter = Counter()
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        for j in range(sg.OperatorsLength()):
            op = sg.Operators(j)
            oc = model.OperatorCodes(op.OpcodeIndex())
            name = ops.get(max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()), "?")
            if name in WEIGHTED_OPS and op.InputsLength() > 1:
                out[(name, types.get(sg.Tensors(op.Inputs(1)).Type(), "?"))] += 1
    return dict(out)


class LiteRTRuntime(Runtime):
    """LiteRT through litert-torch (its PT2E quantizer, completed by :func:`annotate_float_gaps`;
    the ``"mobile_int8"`` export forms for INT8); the file runs in ai-edge-litert's Interpreter."""

    name, label, suffix = "litert", "LiteRT", ".tflite"
    backend = "LiteRT's builtin ops (custom / Flex ops are not in the standard LiteRT runtime)"
    complete = "builtin ops only"
    int8_forms = "mobile_int8"
    float_forms = True  # int8 BATCH_MATMUL / RSQRT / GELU run outside its XNNPACK delegate

    def require(self) -> None:
        require("litert_torch", "LiteRT export")
        require("ai_edge_litert.interpreter", "LiteRT export")

    fold_quantize = False

    def pt2e_quantizer(self, qat: bool = False):
        return litert_quantizer(qat)

    def int8_options(self, quantizer) -> dict:
        from litert_torch.quantize.quant_config import QuantConfig

        return {"quant_config": QuantConfig(pt2e_quantizer=quantizer)}

    def quantize(self, net, x, images, float_layers=(), calib_method=None):
        with _quiet():
            return super().quantize(net, x, images, float_layers, calib_method)

    def lower(self, net, x, options, model_name, info=None) -> Lowered:
        import litert_torch

        try:
            with _quiet():
                flat = bytes(litert_torch.convert(net, (x,), **options).model_content())
        except Exception as e:  # noqa: BLE001 - the converter raises many classes
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LoweringError(f"litert-torch cannot convert {model_name} ({type(e).__name__}: "
                                f"{first[:300]}); the fix is an export form of the module that fails in "
                                f"mobilenets/deploy/export_swaps.py (MOBILE_FORMS)") from e
        builtin, other = tflite_ops(flat)
        outside = {f"{k} (custom/Flex)": v for k, v in other.items()}
        return Lowered(lambda tmp: Path(tmp).write_bytes(flat), builtin, outside,
                       [f"{k}: {v}" for k, v in outside.items()])

    def runner(self, path: str, threads: Optional[int] = None) -> "TfliteRunner":
        return TfliteRunner(path, threads=2 if threads is None else threads)

    def write_info(self, path: str, info) -> None:
        write_tflite_model_info(path, info)


#: the metadata entry of a ``.tflite`` file holding the model's ModelInfo (JSON), as in ONNX files
TFLITE_INFO_KEY = "mobilenets.model_info"


def write_tflite_model_info(path: Union[str, os.PathLike], info) -> bool:
    """Record ``info`` (a :class:`~mobilenets.models.info.ModelInfo`) in a LiteRT flatbuffer's
    ``metadata`` (a named buffer, the standard place: the interpreter ignores it), replacing an
    earlier one. A file whose buffers live outside the flatbuffer (over 2 GB) is left as it is
    (``False``)."""
    import json

    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    buf = Path(path).read_bytes()
    model = schema.ModelT.InitFromPackedBuf(buf, 0)
    if any(getattr(b, "offset", 0) for b in model.buffers or []):
        return False
    data = schema.BufferT()
    data.data = np.frombuffer(json.dumps(info.to_dict()).encode(), dtype=np.uint8)
    model.buffers.append(data)
    entry = schema.MetadataT()
    entry.name, entry.buffer = TFLITE_INFO_KEY, len(model.buffers) - 1
    keep = [m for m in (model.metadata or []) if m.name not in (TFLITE_INFO_KEY, TFLITE_INFO_KEY.encode())]
    model.metadata = keep + [entry]
    builder = flatbuffers.Builder(len(buf) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    Path(path).write_bytes(bytes(builder.Output()))
    return True


def read_tflite_model_info(path: Union[str, os.PathLike]):
    """The :class:`~mobilenets.models.info.ModelInfo` a ``.tflite`` file records (None: none)."""
    import json

    from ai_edge_litert import schema_py_generated as schema

    from ..models.info import ModelInfo

    buf = Path(path).read_bytes()
    model = schema.Model.GetRootAs(buf, 0)
    for i in range(model.MetadataLength()):
        md = model.Metadata(i)
        if md.Name() in (TFLITE_INFO_KEY, TFLITE_INFO_KEY.encode()):
            raw = model.Buffers(md.Buffer()).DataAsNumpy()
            return ModelInfo.from_dict(json.loads(bytes(raw).decode()))
    return None


LITERT = LiteRTRuntime()


def export_tflite(model: nn.Module, path: Union[str, os.PathLike], input_size: Sequence[int] = (224, 224),
                  calib=None, *, int8: Optional[bool] = None, batch_size: int = 1,
                  calib_count: int = DEFAULT_CALIB_COUNT, verify: bool = True, atol_rel: float = 1e-4,
                  allow_fallback: bool = False, calib_method: Optional[str] = None) -> MobileExport:
    """Export ``model`` to a LiteRT flatbuffer (``.tflite``) with litert-torch.

    Args:
        model: a classifier or feature extractor of this library (not modified).
        path: output ``.tflite`` file, written atomically.
        input_size: ``(H, W)``; the file has this fixed NCHW input shape.
        calib: calibration data for INT8 (as :func:`~mobilenets.deploy.export_executorch`);
            giving it means INT8.
        int8: PT2E static INT8 with litert-torch's quantizer (default: ``calib is not None``).
        batch_size: the fixed batch dimension. calib_count: images for a source name.
        verify: run the file in ai-edge-litert's Interpreter (see :class:`MobileExport`).
        atol_rel: fp32 tolerance, relative to the largest eager output.
        allow_fallback: accept custom / Flex ops instead of raising :class:`LoweringError`.
        calib_method: INT8 activation ranges: ``"auto"`` (default: ``"mse"`` or ``"average"``,
            whichever is closer to fp32 on the calibration images, then per group of activations
            the method that brings the outputs closer), ``"mse"``, ``"minmax"``,
            ``"percentile"``, ``"average"`` (:mod:`mobilenets.deploy.observers`).

    Returns:
        A :class:`MobileExport` (path-like) with the checks' results.

    Raises:
        ValueError: bad size / suffix, INT8 without calibration data, bad calibration data.
        LoweringError: the converter failed or wrote non-builtin ops (named, with the fix).
        ImportError: litert-torch / ai-edge-litert not installed. RuntimeError: verification failed.
    """
    return export_mobile(LITERT, model, path, input_size, calib, int8=int8, batch_size=batch_size,
                         calib_count=calib_count, verify=verify, atol_rel=atol_rel, allow_fallback=allow_fallback,
                         calib_method=calib_method)


def _ordered_outputs(interp) -> list[dict]:
    """The interpreter's output details in the exported module's order: by the signature's output
    names (litert-torch writes ``output_0``, ``output_1``, ...), else as the interpreter lists them."""
    details = interp.get_output_details()
    try:
        sigs = interp._get_full_signature_list()
    except AttributeError:
        return details
    if len(sigs) != 1:
        return details
    named = next(iter(sigs.values())).get("outputs", {})
    if len(named) != len(details):
        return details

    def key(name: str):
        tail = name.rsplit("_", 1)[-1]
        return (0, int(tail), name) if tail.isdigit() else (1, 0, name)

    by_index = {d["index"]: d for d in details}
    order = [named[n] for n in sorted(named, key=key)]
    return [by_index[i] for i in order] if all(i in by_index for i in order) else details


class TfliteRunner:
    """A ``.tflite`` file in ai-edge-litert's Interpreter (default XNNPACK delegate):
    ``runner(x) -> output`` (float32), checking ``x`` against the file's fixed input shape. An
    INT8 file has int8 input and output tensors (what litert-torch writes): the runner quantizes
    the input and dequantizes the output with the file's own scales and zero points, as an app
    would.

    Args:
        path: the ``.tflite`` file. threads: interpreter threads (0: its default).
    """

    def __init__(self, path: Union[str, os.PathLike], threads: int = 0):
        require("ai_edge_litert.interpreter", "Running a .tflite file")
        from ai_edge_litert.interpreter import Interpreter

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"LiteRT model not found: {p}")
        try:
            with _quiet():
                self.interp = Interpreter(model_path=str(p), num_threads=threads or None)
                self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ValueError(f"{p}: LiteRT cannot load it as a model ({str(e).splitlines()[0][:200]})") from None
        self.path = p
        self._in = self.interp.get_input_details()[0]
        self._outs = _ordered_outputs(self.interp)
        self.input_shape = tuple(int(s) for s in self._in["shape"])
        self.batch = self.input_shape[0]

    def __call__(self, x: torch.Tensor) -> Union[torch.Tensor, list[torch.Tensor]]:
        """The model's output for ``x`` (float); a list, in the exported module's order, when it has
        several."""
        check_shape(x, self.input_shape, self.path, ".tflite")
        a = np.ascontiguousarray(x.detach().float().numpy())
        dtype = self._in["dtype"]
        if dtype != np.float32:  # an integer-I/O file: quantize with the input's own scale / zero point
            scale, zp = self._in["quantization"]
            info = np.iinfo(dtype)
            a = np.clip(np.round(a / scale) + zp, info.min, info.max).astype(dtype)
        self.interp.set_tensor(self._in["index"], a)
        self.interp.invoke()
        outs = []
        for d in self._outs:
            out = self.interp.get_tensor(d["index"])
            if out.dtype != np.float32:
                scale, zp = d["quantization"]
                out = (out.astype(np.float32) - zp) * scale
            outs.append(torch.from_numpy(out.copy()))
        return outs[0] if len(outs) == 1 else outs

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Outputs for ``images`` ``(N, C, H, W)``, fed in chunks of the file's batch size."""
        return torch.cat([self(c) for c in chunks(images, self.batch)])


def tflite_logits(path: Union[str, os.PathLike], images: torch.Tensor, threads: int = 0) -> torch.Tensor:
    """Run a ``.tflite`` file on ``images`` (fed in chunks of its fixed batch size)."""
    return TfliteRunner(path, threads).logits(images)
