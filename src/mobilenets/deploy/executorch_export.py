"""ExecuTorch export with the XNNPACK delegate (``.pte``), fp32 and INT8, verified by running the
file in ExecuTorch's runtime.

Pipeline: fuse -> ``"executorch"`` export forms (the mobile ones and XNNPACK's own) ->
``torch.export`` -> (INT8: PT2E with ``XNNPACKQuantizer``, per-channel symmetric weights, static
activations, calibrated) -> ``to_edge_transform_and_lower`` with ``XnnpackPartitioner`` -> ``to_executorch`` -> written
atomically -> loaded by ``executorch.runtime`` and compared with eager.

Every op of every model of this library is delegated to XNNPACK (none runs on ExecuTorch's
portable kernels); an op that is not is a :class:`~mobilenets.deploy.mobile.LoweringError` naming
it, its module and XNNPACK's reason, unless ``allow_fallback=True``.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from ..extras import require
from .mobile import (DEFAULT_CALIB_COUNT, Lowered, MobileExport, Runtime, check_shape, chunks, export_mobile,
                     export_program)

_WHY_LOGGERS = ("executorch.backends.xnnpack.partition.config.generic_node_configs",
                "executorch.backends.xnnpack.partition.config.gemm_configs",
                "executorch.backends.xnnpack.partition.config.xnnpack_config",
                "executorch.backends.xnnpack.partition.config.node_configs")
_PLUMBING = ("executorch_call_delegate", "getitem")


def _require_executorch():
    return require("executorch.exir", "ExecuTorch export")


def xnnpack_quantizer(qat: bool = False):
    """The XNNPACK PT2E quantizer: int8 symmetric per-channel weights, static int8 activations
    (``qat``: as fake quantization to train through)."""
    _require_executorch()
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    q = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=qat,
                                                                        is_dynamic=False))
    if not qat:
        # its conv + BatchNorm patterns (marked QAT's) cannot match after PTQ's prepare_pt2e, which
        # folds every BatchNorm into its conv first, yet a static config tries them all, capturing
        # each pattern with torch.export on every prepare (~3 s here, 4 prepares per `auto`)
        q.SUPPORTED_PATTERNS = [p for p in q.SUPPORTED_PATTERNS if not p.is_qat]
    return q


class _Why(logging.Handler):
    """Collects XNNPACK's "WhyNoPartition" reasons (logged at debug level) by node name."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.reasons: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        why = record.msg
        node = getattr(why, "node", None)
        if node is not None:
            self.reasons.setdefault(node.name, getattr(why, "reason", str(why)))


#: the program method returning the model's ModelInfo (JSON), as ONNX / LiteRT files record it
PTE_INFO_METHOD = "model_info"


def _lower(ep, info=None):
    """``to_edge_transform_and_lower`` with the XNNPACK partitioner; ``(edge, reasons)``; with
    ``info`` (a ModelInfo) the program also has a ``model_info`` method returning it as JSON."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    handler = _Why()
    saved = []
    for name in _WHY_LOGGERS:
        lg = logging.getLogger(name)
        saved.append((lg, lg.level, lg.propagate))
        lg.setLevel(logging.DEBUG)
        lg.propagate = False
        lg.addHandler(handler)
    try:
        constants = {} if info is None else {PTE_INFO_METHOD: json.dumps(info.to_dict())}
        edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()], constant_methods=constants or None)
    finally:
        for lg, level, prop in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = prop
    return edge, handler.reasons


def _module_of(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "the model"
    path, cls = list(stack.values())[-1]
    name = getattr(cls, "__name__", str(cls)).split(".")[-1]
    return f"{path.replace('L__self__', '').strip('.') or 'root'} ({name})"


def outside_delegates(edge, reasons: Optional[dict] = None) -> tuple[dict, list[str], int]:
    """``({"op @ module": count}, [one line per kind, with XNNPACK's reason], delegates)`` of a
    lowered program: what runs on portable kernels instead of XNNPACK."""
    outside: Counter = Counter()
    why: dict[str, str] = {}
    delegates = 0
    for n in edge.exported_program().graph_module.graph.nodes:
        if n.op != "call_function":
            continue
        op = getattr(n.target, "__name__", str(n.target))
        if op.startswith("executorch_call_delegate"):
            delegates += 1
        if any(op.startswith(p) for p in _PLUMBING):
            continue
        key = f"{op} @ {_module_of(n)}"
        outside[key] += 1
        if reasons and n.name in reasons:
            why.setdefault(key, reasons[n.name])
    lines = [f"{k} (x{c})" + (f": {why[k]}" if k in why else "") for k, c in outside.items()]
    return dict(outside), lines, delegates


class ExecuTorchRuntime(Runtime):
    """ExecuTorch with the XNNPACK delegate: PT2E with ``XNNPACKQuantizer``,
    ``to_edge_transform_and_lower`` with ``XnnpackPartitioner``, ``to_executorch``; the file runs
    in ``executorch.runtime``."""

    name, label, suffix = "executorch", "ExecuTorch (XNNPACK)", ".pte"
    backend = "the XNNPACK delegate (they would run on ExecuTorch's portable kernels, slowly)"
    complete = "every op in XNNPACK"
    forms = "executorch"
    int8_forms = "executorch_int8"

    def require(self) -> None:
        _require_executorch()

    def pt2e_quantizer(self, qat: bool = False):
        return xnnpack_quantizer(qat)

    def lower(self, net, x, options, model_name, info=None) -> Lowered:
        edge, reasons = _lower(export_program(net, x), info)
        outside, lines, _ = outside_delegates(edge, reasons)
        ops = dict(Counter(getattr(n.target, "__name__", str(n.target)).split(".")[-1]
                           for n in edge.exported_program().graph_module.graph.nodes if n.op == "call_function"))

        def write(tmp: str) -> None:  # after the driver's check of what stayed outside XNNPACK
            with open(tmp, "wb") as f:
                edge.to_executorch().write_to_file(f)
        return Lowered(write, ops, outside, lines)

    def runner(self, path: str, threads: Optional[int] = None) -> "PteRunner":
        return PteRunner(path, threads=threads or 0)


EXECUTORCH = ExecuTorchRuntime()


def export_executorch(model: nn.Module, path: Union[str, os.PathLike], input_size: Sequence[int] = (224, 224),
                      calib=None, *, int8: Optional[bool] = None, batch_size: int = 1,
                      calib_count: int = DEFAULT_CALIB_COUNT, verify: bool = True, atol_rel: float = 1e-4,
                      allow_fallback: bool = False, calib_method: Optional[str] = None) -> MobileExport:
    """Export ``model`` to an ExecuTorch program (``.pte``) delegated to XNNPACK.

    Args:
        model: a classifier or feature extractor of this library (not modified).
        path: output ``.pte`` file, written atomically (nothing is left there on failure).
        input_size: ``(H, W)``; the program has this fixed input shape.
        calib: calibration data for INT8: ``"digits"`` | ``"fake"`` | an image folder (then
            ``calib_count`` images through the evaluation transform), or images normalized as
            the model expects (a tensor ``(N, C, H, W)``, a DataLoader). Giving it means INT8.
        int8: PT2E static INT8 with the XNNPACK quantizer (default: ``calib is not None``).
        batch_size: the fixed batch dimension (1: what a phone runs).
        calib_count: images drawn when ``calib`` is a source name.
        verify: load and run the file in ExecuTorch's runtime (see :class:`MobileExport`).
        atol_rel: fp32 tolerance, relative to the largest eager output.
        allow_fallback: accept ops that XNNPACK does not take (they run on ExecuTorch's portable
            kernels, slowly) instead of raising :class:`LoweringError`.
        calib_method: INT8 activation ranges: ``"auto"`` (default: ``"mse"`` or ``"average"``,
            whichever is closer to fp32 on the calibration images, then per group of activations
            the method that brings the outputs closer), ``"mse"``, ``"minmax"``,
            ``"percentile"``, ``"average"`` (:mod:`mobilenets.deploy.observers`).

    Returns:
        A :class:`MobileExport` (path-like) with the checks' results.

    Raises:
        ValueError: bad size / suffix, INT8 without calibration data, bad calibration data.
        LoweringError: an op XNNPACK does not take (named, with the module and the fix).
        ImportError: executorch is not installed. RuntimeError: verification failed.
    """
    return export_mobile(EXECUTORCH, model, path, input_size, calib, int8=int8, batch_size=batch_size,
                         calib_count=calib_count, verify=verify, atol_rel=atol_rel, allow_fallback=allow_fallback,
                         calib_method=calib_method)


def set_threads(threads: int) -> None:
    """Size ExecuTorch's (process-wide) XNNPACK thread pool."""
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool

    if threads and _threadpool_get_thread_count() != threads:
        _unsafe_reset_threadpool(int(threads))


class PteRunner:
    """A loaded ``.pte`` program: ``runner(x) -> logits``, checking ``x`` against the program's
    fixed input shape.

    Args:
        path: the ``.pte`` file. threads: size of ExecuTorch's thread pool (process-wide; 0:
            leave it).
    """

    def __init__(self, path: Union[str, os.PathLike], threads: int = 0):
        require("executorch.runtime", "Running a .pte file")
        from executorch.runtime import Runtime

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"ExecuTorch program not found: {p}")
        set_threads(threads)
        try:
            program = Runtime.get().load_program(p)
            self.method = program.load_method("forward")
        except Exception as e:  # noqa: BLE001 - the runtime raises RuntimeError / ValueError for a bad file
            raise ValueError(f"{p}: ExecuTorch cannot load it as a program ({str(e).splitlines()[0][:200]})") from None
        meta = self.method.metadata
        t = meta.input_tensor_meta(0)
        self.path = p
        self.input_shape = tuple(t.sizes())
        self.batch = self.input_shape[0]

    def __call__(self, x: torch.Tensor) -> Union[torch.Tensor, list[torch.Tensor]]:
        """The program's output for ``x``; a list, in the program's order, when it has several."""
        check_shape(x, self.input_shape, self.path, ".pte")
        out = self.method.execute([x.contiguous().float()])
        return out[0] if len(out) == 1 else list(out)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Outputs for ``images`` ``(N, C, H, W)``, fed in chunks of the program's batch size."""
        return torch.cat([self(c) for c in chunks(images, self.batch)])


def read_pte_model_info(path: Union[str, os.PathLike]):
    """The :class:`~mobilenets.models.info.ModelInfo` a ``.pte`` program records (its
    ``model_info`` method; None: a program without one)."""
    from executorch.runtime import Runtime

    from ..models.info import ModelInfo

    program = Runtime.get().load_program(Path(path))
    if PTE_INFO_METHOD not in program.method_names:
        return None
    return ModelInfo.from_dict(json.loads(program.load_method(PTE_INFO_METHOD).execute([])[0]))


def pte_logits(path: Union[str, os.PathLike], images: torch.Tensor, threads: int = 0) -> torch.Tensor:
    """Run a ``.pte`` file on ``images`` (fed in chunks of its fixed batch size)."""
    return PteRunner(path, threads).logits(images)
