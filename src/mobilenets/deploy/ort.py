"""ONNX Runtime on the CPU: sessions, running a file on images, and the measures the INT8 paths
are judged by (top-1 agreement, cosine similarity, which operators actually run)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch


def _require_ort():
    """``onnxruntime`` (with its quantization tools and ``onnx``), or an ImportError saying how
    to install them."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxruntime.quantization  # noqa: F401
    except ImportError as e:
        raise ImportError("INT8 quantization needs ONNX Runtime and onnx: pip install onnxruntime onnx "
                          f"(or pip install 'mobilenets[onnx]'); import failed: {e}") from None
    return onnxruntime


def agreement(a_logits: Union[torch.Tensor, np.ndarray], b_logits: Union[torch.Tensor, np.ndarray]) -> float:
    """Share (0..1) of rows whose arg-max (top-1 class) is the same in both logit arrays."""
    a, b = torch.as_tensor(np.asarray(a_logits)), torch.as_tensor(np.asarray(b_logits))
    if a.shape != b.shape or a.ndim != 2 or len(a) == 0:
        raise ValueError(f"agreement needs two (N, classes) arrays of the same shape, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    return float((a.argmax(1) == b.argmax(1)).double().mean())


def cosine(a: Union[torch.Tensor, np.ndarray], b: Union[torch.Tensor, np.ndarray]) -> float:
    """Cosine similarity between two arrays, flattened."""
    a = torch.as_tensor(np.asarray(a), dtype=torch.float64).flatten()
    b = torch.as_tensor(np.asarray(b), dtype=torch.float64).flatten()
    return float(a @ b / (a.norm() * b.norm()).clamp(min=1e-300))


def ort_session(path: Union[str, Path], threads: int = 0, optimized_path: Optional[str] = None,
                optimize: bool = True, spinning: bool = True):
    """A CPU ``InferenceSession`` (quiet logging; ``threads=0``: ONNX Runtime's default).
    ``optimize=False`` runs the graph as written (QDQ simulated in float, no int8 kernels).
    ``spinning=False``: worker threads sleep after a run instead of spinning (ONNX Runtime's
    default keeps them busy-waiting, which steals the cores from whatever runs next: use it
    when timing ONNX Runtime interleaved with other paths)."""
    ort = _require_ort()
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
    if not Path(path).is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT raises its own classes (InvalidProtobuf, Fail, ...)
        if not type(e).__module__.startswith("onnxruntime"):
            raise
        raise OnnxFileError(f"{path}: ONNX Runtime cannot load it as a model "
                            f"({str(e).splitlines()[0][:300]})") from None


class OnnxFileError(ValueError):
    """An ``.onnx`` file that is not a loadable ONNX model (corrupt, empty, not ONNX)."""


def read_onnx(path: Union[str, Path]):
    """``onnx.load`` with the errors a user can act on: a missing file, or an
    :class:`OnnxFileError` naming a file that is not an ONNX model with a graph."""
    import onnx
    from google.protobuf.message import DecodeError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ONNX model not found: {p}")
    try:
        proto = onnx.load(str(p))
    except (DecodeError, ValueError, RuntimeError) as e:
        raise OnnxFileError(f"{p}: not an ONNX model ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None
    if not proto.graph.node or not proto.graph.input:
        raise OnnxFileError(f"{p}: not an ONNX model with a graph (no nodes or no inputs)")
    return proto


def onnx_logits(model: Union[str, Path, Any], images: torch.Tensor, batch_size: int = 64,
                threads: int = 0) -> torch.Tensor:
    """Run an ONNX file (or an ``InferenceSession``) on ``images`` (N, C, H, W); a graph with a
    fixed batch size is fed one chunk of that size at a time. Returns the first output."""
    sess = ort_session(model, threads) if isinstance(model, (str, Path)) else model
    inp = sess.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
    step = fixed or batch_size
    x = images.detach().float().cpu().numpy()
    if fixed and len(x) % fixed:
        raise ValueError(f"the model's batch size is fixed to {fixed}; got {len(x)} images")
    outs = [sess.run(None, {inp.name: x[i:i + step]})[0] for i in range(0, len(x), step)]
    return torch.from_numpy(np.concatenate(outs))


def int8_op_counts(path: Union[str, Path]) -> Counter:
    """Operator counts of the graph ONNX Runtime actually executes for ``path`` (after its
    graph optimizations): a QDQ model that runs as INT8 shows ``QLinearConv`` / ``QGemm`` /
    ``QLinearAdd`` and no float ``Conv``."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="mobilenets-int8-") as d:
        opt = os.path.join(d, "optimized.onnx")
        ort_session(path, threads=1, optimized_path=opt)
        g = onnx.load(opt).graph
        return Counter(n.op_type for n in g.node)


@contextlib.contextmanager
def _quiet_ort_python_logging():
    """onnxruntime.quantization logs through the root logger (a pre-processing hint on every
    call) and prints histogram progress to stdout; keep both out of our users' output."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(max(old, logging.ERROR))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(old)

