"""A trained fake-quant model written as an INT8 QDQ ONNX file (:func:`export_qat_onnx`)."""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from ...weights.io import atomic_write
from .. import onnx_passes
from ..onnx_export import MAX_OPSET
from ..onnx_passes import MIN_QDQ_OPSET
from ..ort import _require_ort, kernel_vs_qdq, onnx_logits, ort_session
from .modules import QATModel, QConv2d, QLinear, weight_scale


def export_qat_onnx(qat_model: QATModel, out: Union[str, os.PathLike], input_size: Sequence[int] = (224, 224),
                    dynamic_batch: bool = False, opset: int = 17, verify: bool = True,
                    example_input: Optional[torch.Tensor] = None, rtol: float = 0.05) -> Path:
    """Export a :func:`prepare_qat` model as an INT8 QDQ ONNX file (int8 weights, int32 biases,
    uint8 activations) that ONNX Runtime runs with integer kernels; written atomically.

    Args:
        qat_model: the trained fake-quant model (ranges are frozen as they are).
        out: output ``.onnx`` file.
        input_size: ``(H, W)`` of the traced input.
        dynamic_batch: symbolic batch dimension.
        opset: 13-20.
        verify: run the file with ONNX Runtime on ``example_input`` (default: the first
            calibration images, resized to ``input_size``) and compare with the fake-quant
            model (up to 8 images). The QDQ graph computed in float must match it to ``rtol``
            (relative RMS of the logits), else ``RuntimeError``: an export mistake gives errors
            of order 1, while float summation order flips an occasional value by one
            quantization step and deep networks carry the flips to the logits (measured:
            benchmarks/INT8.md, "Design measurements"). Then ONNX Runtime's integer kernels are
            checked against that graph operator by operator (:func:`kernel_vs_qdq`); where one
            computes something else (saturating u8 x s8 kernels with ``reduce_range=False`` on
            a CPU without VNNI), a warning names it.

    Raises:
        ValueError: not a QAT model, bad size / opset / file name, uninitialised ranges.
        RuntimeError: the exported graph does not compute what the fake-quant model does.
    """
    _require_ort()
    if not isinstance(qat_model, QATModel):
        raise ValueError(f"export_qat_onnx needs a model from prepare_qat(), got {type(qat_model).__name__}; "
                         f"for a float model use quantize_onnx()")
    if not MIN_QDQ_OPSET <= int(opset) <= MAX_OPSET:
        raise ValueError(f"unsupported opset {opset} for INT8 QDQ export; choose one of "
                         f"{list(range(MIN_QDQ_OPSET, MAX_OPSET + 1))} (17 is a good default)")
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    if len(input_size) != 2 or min(input_size) < 32:
        raise ValueError(f"input_size must be (H, W) with H, W >= 32, got {tuple(input_size)}")
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"output file must end in .onnx, got {out.name!r}")
    uninit = [f for f in qat_model.fake_quantizers() if not f.initialized]
    if uninit:
        raise ValueError(f"{len(uninit)} activation range(s) are not initialised: calibrate the model "
                         f"(prepare_qat(model, example_input=images) or qat_model.calibrate(images)) or train it")
    net = copy.deepcopy(qat_model).eval()
    for m in net.modules():  # scales and rounded biases as constants: the exporter writes initializers
        if isinstance(m, (QConv2d, QLinear)):
            m._frozen_scale = weight_scale(m.weight, m.qmax)
            with torch.no_grad():
                m._frozen_bias = m.quantized_params()[1].detach().clone()
    x = example_input if example_input is not None else qat_model.example_input
    if x is None:  # no real images: uniform noise over the calibrated input range
        lo, hi = float(qat_model.fq_input.min_val), float(qat_model.fq_input.max_val)
        x = lo + (hi - lo) * torch.rand(4, qat_model.in_chans, *input_size, generator=torch.Generator().manual_seed(0))
    x = x.detach().float().cpu()
    if tuple(x.shape[-2:]) != tuple(input_size):
        x = nn.functional.interpolate(x, size=tuple(input_size), mode="bilinear", align_corners=False)
    trace_x = x[:2] if dynamic_batch else x[:1]
    x = x[:8]  # onnx_logits feeds a fixed-batch graph one image at a time
    with torch.no_grad():
        ref = net(x)
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).double().norm() / b.double().norm().clamp(min=1e-12))

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (trace_x,), tmp, input_names=["input"], output_names=["logits"],
                              opset_version=int(opset), dynamic_axes=axes, do_constant_folding=True,
                              dynamo=False)
        onnx_passes.finalize_qdq(tmp)  # through the module: a patch of it (tests) is seen here
        if verify:
            qdq = onnx_logits(ort_session(tmp, threads=1, optimize=False), x)
            if rel(qdq, ref) > rtol:
                raise RuntimeError(f"the exported QDQ graph differs from the fake-quant model: relative RMS "
                                   f"{rel(qdq, ref):.3g} > {rtol}")
            checks = kernel_vs_qdq(tmp, x)
            bad = [c for c in checks if not c.agrees]
            if bad:
                c = bad[0]
                what = (f"up to {c.max_steps} steps, {c.off_tie} elements away from rounding ties" if c.quantized
                        else f"relative max difference {c.rel_max:.2g}")
                warnings.warn(f"ONNX Runtime's integer kernels compute something else than the QDQ graph in "
                              f"{len(bad)} of {len(checks)} operators (first: {c.output}, {'/'.join(c.ops)}: "
                              f"{what}): likely int16 saturation of u8 x s8 products on a CPU without VNNI; "
                              f"prepare_qat(..., reduce_range=True) avoids it", stacklevel=3)

    return atomic_write(out, write)

