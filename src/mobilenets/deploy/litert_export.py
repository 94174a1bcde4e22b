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

from ..weights.io import atomic_write
from .mobile import (DEFAULT_CALIB_COUNT, LoweringError, MobileExport, check_int8_args, check_mobile_args,
                     check_shape, chunks, prepare, pt2e_quantize, require, resolve_calibration, verify_export)


def litert_quantizer():
    """litert-torch's PT2E quantizer: int8 symmetric per-channel weights, static int8 activations."""
    require("litert_torch", "litert-torch", "LiteRT export")
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config

    return PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))


@contextlib.contextmanager
def _quiet():
    """litert-torch prints a progress tree on stdout and warns freely; keep our users' output clean."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def tflite_ops(path_or_bytes: Union[str, os.PathLike, bytes]) -> tuple[dict, dict]:
    """``(builtin op counts, custom / Flex op counts)`` of a ``.tflite`` flatbuffer (all subgraphs)."""
    require("ai_edge_litert", "ai-edge-litert", "Reading a .tflite file")
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


def export_tflite(model: nn.Module, path: Union[str, os.PathLike], input_size: Sequence[int] = (224, 224),
                  calib=None, *, int8: Optional[bool] = None, batch_size: int = 1,
                  calib_count: int = DEFAULT_CALIB_COUNT, verify: bool = True, atol_rel: float = 1e-4,
                  allow_fallback: bool = False) -> MobileExport:
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

    Returns:
        A :class:`MobileExport` (path-like) with the checks' results.

    Raises:
        ValueError: bad size / suffix, INT8 without calibration data, bad calibration data.
        LoweringError: the converter failed or wrote non-builtin ops (named, with the fix).
        ImportError: litert-torch / ai-edge-litert not installed. RuntimeError: verification failed.
    """
    path, size = check_mobile_args(path, input_size, ".tflite", batch_size)
    int8 = check_int8_args(calib, int8)
    litert_torch = require("litert_torch", "litert-torch", "LiteRT export")
    require("ai_edge_litert.interpreter", "ai-edge-litert", "LiteRT export")
    fused, net, in_chans = prepare(model)
    x = torch.randn(batch_size, in_chans, *size, generator=torch.Generator().manual_seed(0))
    images, kwargs = None, {}
    if int8:
        from litert_torch.quantize.quant_config import QuantConfig

        images = resolve_calibration(calib, size, in_chans, calib_count)
        quantizer = litert_quantizer()
        with _quiet():
            net = pt2e_quantize(net, x, images, quantizer, fold_quantize=False)
        kwargs["quant_config"] = QuantConfig(pt2e_quantizer=quantizer)
    with torch.no_grad():
        ref = (net if int8 else fused)(x)
    try:
        with _quiet():
            edge_model = litert_torch.convert(net, (x,), **kwargs)
            flat = edge_model.model_content()
    except Exception as e:  # noqa: BLE001 - the converter raises many classes
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LoweringError(f"litert-torch cannot convert {type(model).__name__} ({type(e).__name__}: "
                            f"{first[:300]}); the fix is an export form of the module that fails in "
                            f"mobilenets/deploy/export_swaps.py (MOBILE_FORMS)") from e
    builtin, other = tflite_ops(bytes(flat))
    if other and not allow_fallback:
        raise LoweringError(f"{type(model).__name__}: the LiteRT file would need non-builtin ops "
                            f"{dict(other)} (custom / Flex: not in the standard LiteRT runtime). Fix: an "
                            f"export form of the module producing them (mobilenets/deploy/export_swaps.py, "
                            f"MOBILE_FORMS), or allow_fallback=True")
    result: dict = {}

    def write(tmp: str) -> None:
        Path(tmp).write_bytes(bytes(flat))
        if verify:
            runner = TfliteRunner(tmp, threads=2)
            result["check"] = verify_export(runner, batch_size, fused, x, ref, atol_rel, "LiteRT", int8, images)

    atomic_write(path, write)
    err, agree, n_agree = result.get("check", (None, None, 0))
    return MobileExport(Path(path), "litert", "int8" if int8 else "fp32", tuple(x.shape), err, agree, n_agree,
                        {f"{k} (custom/Flex)": v for k, v in other.items()}, builtin)


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
        require("ai_edge_litert.interpreter", "ai-edge-litert", "Running a .tflite file")
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
        self._out = self.interp.get_output_details()[0]
        self.input_shape = tuple(int(s) for s in self._in["shape"])
        self.batch = self.input_shape[0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, self.input_shape, self.path, ".tflite")
        a = np.ascontiguousarray(x.detach().float().numpy())
        dtype = self._in["dtype"]
        if dtype != np.float32:  # an integer-I/O file: quantize with the input's own scale / zero point
            scale, zp = self._in["quantization"]
            info = np.iinfo(dtype)
            a = np.clip(np.round(a / scale) + zp, info.min, info.max).astype(dtype)
        self.interp.set_tensor(self._in["index"], a)
        self.interp.invoke()
        out = self.interp.get_tensor(self._out["index"])
        if out.dtype != np.float32:
            scale, zp = self._out["quantization"]
            out = (out.astype(np.float32) - zp) * scale
        return torch.from_numpy(out.copy())

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Outputs for ``images`` ``(N, C, H, W)``, fed in chunks of the file's batch size."""
        return torch.cat([self(c) for c in chunks(images, self.batch)])


def tflite_logits(path: Union[str, os.PathLike], images: torch.Tensor, threads: int = 0) -> torch.Tensor:
    """Run a ``.tflite`` file on ``images`` (fed in chunks of its fixed batch size)."""
    return TfliteRunner(path, threads).logits(images)
