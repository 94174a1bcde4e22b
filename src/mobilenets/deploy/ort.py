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
from typing import Any, NamedTuple, Optional, Union

import numpy as np
import torch

from ..extras import require
from ..onnxrt import OnnxFileError, ort_session as _ort_session  # noqa: F401  (OnnxFileError: deploy's API)


def _require_ort(feature: str = "INT8 quantization"):
    """``onnxruntime`` (with its quantization tools and ``onnx``), or a
    :class:`~mobilenets.extras.MissingDependencyError` naming the extra."""
    from ..extras import MissingDependencyError
    try:
        require("onnx", feature)
        require("onnxruntime.quantization", feature)
        return require("onnxruntime", feature)
    except MissingDependencyError as e:  # both come with the onnx extra, or by themselves
        raise MissingDependencyError(f"{e} (or pip install onnxruntime onnx)") from None


def _values(a: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
    """A CPU tensor of the values of ``a``: a tensor (one that requires grad, a model's raw
    output, included) or anything numpy reads."""
    return a.detach().cpu() if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))


def agreement(a_logits: Union[torch.Tensor, np.ndarray], b_logits: Union[torch.Tensor, np.ndarray]) -> float:
    """Share (0..1) of rows whose arg-max (top-1 class) is the same in both logit arrays."""
    a, b = _values(a_logits), _values(b_logits)
    if a.shape != b.shape or a.ndim != 2 or len(a) == 0:
        raise ValueError(f"agreement needs two (N, classes) arrays of the same shape, got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    return float((a.argmax(1) == b.argmax(1)).double().mean())


def cosine(a: Union[torch.Tensor, np.ndarray], b: Union[torch.Tensor, np.ndarray]) -> float:
    """Cosine similarity between two arrays, flattened."""
    a = _values(a).to(torch.float64).flatten()
    b = _values(b).to(torch.float64).flatten()
    return float(a @ b / (a.norm() * b.norm()).clamp(min=1e-300))


def ort_session(path: Union[str, Path, bytes, Any], threads: int = 0, optimized_path: Optional[str] = None,
                optimize: bool = True, spinning: bool = True):
    """A CPU ``InferenceSession`` (:func:`mobilenets.onnxrt.ort_session`, the one factory), with
    the INT8 tools checked too (``optimize=False`` runs QDQ as written)."""
    _require_ort()
    return _ort_session(path, threads, optimized_path, optimize, spinning)


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


class KernelCheck(NamedTuple):
    """One quantized operator of a QDQ model: ONNX Runtime's kernel against the QDQ graph
    computed in float, on the same inputs (:func:`kernel_vs_qdq`)."""

    output: str            # the tensor the operator writes
    ops: tuple             # what ONNX Runtime runs for it (e.g. ``('QLinearConv',)``; layout Transposes left out)
    quantized: bool        # the output is uint8 / int8 (else float: the logits of ``float_output=True``)
    max_steps: Optional[int]  # largest difference in quantization steps (quantized outputs)
    share: float           # share of the output's elements that differ
    off_tie: Optional[int]  # elements that differ although the QDQ graph's value is not at a rounding tie
    tie_distance: Optional[float]  # of the elements that differ, the largest distance (in steps) of the
    #                                QDQ graph's unrounded value from a half step (quantized outputs)
    rel_max: float         # max |difference| / max |QDQ value|

    @property
    def agrees(self) -> bool:
        """The kernel computes what the QDQ graph says: at most one step off, and only at ties
        (quantized outputs); within 1e-4 of the largest value (float outputs: float rounding of
        an exact integer sum against float sums of dequantized values)."""
        if self.quantized:
            return self.max_steps <= 1 and not self.off_tie
        return self.rel_max <= 1e-4

    @property
    def integer(self) -> bool:
        """ONNX Runtime runs the operator on the integers (no DequantizeLinear left: not in float)."""
        return "DequantizeLinear" not in self.ops


def kernel_vs_qdq(path: Union[str, Path], images: Union[torch.Tensor, np.ndarray], threads: int = 1,
                  tie: float = 0.01) -> list[KernelCheck]:
    """Check, operator by operator, that ONNX Runtime's integer kernels compute what a QDQ file
    says: the whole graph is run once as written (``DQ -> Conv -> Q`` in float) and every
    quantized tensor kept; then each quantized operator (cut out by
    :func:`~mobilenets.deploy.onnx_passes.quantized_node_subgraphs`) runs with ONNX Runtime's
    optimizations, i.e. as the fused integer kernel (``QLinearConv``, ``QLinearAdd``,
    ``QGemm``...), on exactly the inputs the QDQ graph gave it, and its output is compared with
    the QDQ graph's.

    A correct kernel differs from the QDQ graph only where the QDQ graph's unrounded value
    (``x / scale + zero_point`` before ``QuantizeLinear`` rounds it) lies within a float
    rounding of a half step: there the exact integer accumulation and the float graph may round
    to neighbouring steps. Such an element is off by one step and counted as a tie (its
    distance from the half step is below ``tie`` steps); :attr:`KernelCheck.off_tie` counts
    the others. A kernel that computes something else than the file says (int16 saturation of
    u8 x s8 products on a CPU without VNNI with ``reduce_range=False``, a bias or scale read
    differently) moves values by more than float rounding and shows as several steps or as
    differences away from ties.

    Comparing end to end (the logits of the optimized and the unoptimized session) is no test of
    that: one tie, early in a deep network and on a flat image region (many equal values at
    once), changes everything downstream (measured: 0.6 % relative RMS of the logits from one
    tie on 72 elements of a ``QLinearAdd``, as much as from a bias 1 % off in one conv).

    Args:
        path: a QDQ ``.onnx`` file (from :func:`quantize_onnx` or :func:`export_qat_onnx`).
        images: ``(N, C, H, W)`` inputs (a graph with a fixed batch size takes the first ones).
        threads: ONNX Runtime threads.
        tie: how close to a half step (in steps) a value counts as a tie.

    Returns:
        One :class:`KernelCheck` per quantized operator, in graph order.
    """
    import onnx
    from onnx import numpy_helper

    from .onnx_passes import quantized_node_subgraphs

    proto = read_onnx(path)
    if not any(n.op_type == "QuantizeLinear" for n in proto.graph.node):
        raise ValueError(f"{path}: not a QDQ model (no QuantizeLinear nodes); quantize it first with "
                         f"quantize_onnx() or export_qat_onnx()")
    _require_ort()
    parts = quantized_node_subgraphs(proto)
    g = proto.graph
    producer = {o: n for n in g.node for o in n.output}
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in g.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})

    def quantizer(out: str):  # (unrounded input, scale, zero point, axis) of the Q writing `out`
        q = producer[out]
        if q.op_type != "QuantizeLinear" or q.input[1] not in consts:
            return None
        zp = consts.get(q.input[2]) if len(q.input) > 2 and q.input[2] else np.zeros((), np.uint8)
        axis = next((a.i for a in q.attribute if a.name == "axis"), 1)
        return q.input[0], consts[q.input[1]].astype(np.float64), zp.astype(np.float64), axis

    def session(model, optimize: bool, dump: Optional[str] = None):
        return _ort_session(model, threads, dump, optimize)

    # the reference: the whole graph as written, every checked tensor (and what its Q rounds) an output
    quant = {out: quantizer(out) for out, _, _ in parts}
    names = [out for out, _, _ in parts]
    inputs = {i.name for i in g.input}
    names += [q[0] for q in quant.values() if q is not None and q[0] not in names and q[0] not in inputs]
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    infos = {v.name: v for v in onnx.shape_inference.infer_shapes(proto).graph.value_info}
    have = {o.name for o in probe.graph.output}
    probe.graph.output.extend(infos[t] for t in names if t not in have and t in infos)
    ref_sess = session(probe, optimize=False)
    inp = ref_sess.get_inputs()[0]
    x = np.asarray(images.detach().float().cpu() if isinstance(images, torch.Tensor) else images, np.float32)
    if isinstance(inp.shape[0], int):
        x = x[:inp.shape[0]]
    ref = {inp.name: x}
    ref.update(zip(names, ref_sess.run(names, {inp.name: x})))

    checks = []
    with tempfile.TemporaryDirectory(prefix="mobilenets-kernels-") as d:
        for k, (out, inputs, sub) in enumerate(parts):
            dump = os.path.join(d, f"{k}.onnx")
            y = session(sub, optimize=True, dump=dump).run([out], {t: ref[t] for t in inputs})[0]
            ops = tuple(n.op_type for n in onnx.load(dump).graph.node if n.op_type != "Transpose")
            r = ref[out]
            diff = np.abs(y.astype(np.float64) - r.astype(np.float64))
            differs = diff > 0
            share = float(differs.mean()) if diff.size else 0.0
            rel = float(diff.max(initial=0) / max(np.abs(r.astype(np.float64)).max(initial=0), 1e-30))
            if r.dtype not in (np.uint8, np.int8):
                checks.append(KernelCheck(out, ops, False, None, share, None, None, rel))
                continue
            off_tie, distance = int(differs.sum()), None
            if quant[out] is not None and differs.any():
                src, scale, zp, axis = quant[out]
                shape = [1] * r.ndim
                if scale.ndim == 1 and scale.size > 1:
                    shape[axis] = -1
                v = ref[src].astype(np.float64) / scale.reshape(shape) + zp.reshape(shape if zp.ndim else ())
                dist = np.abs(v - np.floor(v) - 0.5)[differs]  # 0: exactly half way between two steps
                off_tie, distance = int((dist >= tie).sum()), float(dist.max())
            checks.append(KernelCheck(out, ops, True, int(diff.max(initial=0)), share, off_tie, distance, rel))
    return checks


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

