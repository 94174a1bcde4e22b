"""Where an exported file's time goes, from its runtime (``mobilenets profile FILE``).

* ExecuTorch ``.pte``: XNNPACK's own per-operator timings. The program runs with ExecuTorch's
  event tracer (ETDump); its XNNPACK delegate records every XNNPACK operator it executes
  (``"Convolution (NHWC, QC8) DWConv"``, ``"Convert (NC)"``, ...) and the Inspector reads them
  back: the median over ``runs`` of each operator, plus the whole call.
* LiteRT ``.tflite``: ai-edge-litert's Python interpreter exposes no per-op profiler, so what it
  gives is the file's structure as the runtime executes it: the operators by type and tensor
  type, which of them its XNNPACK delegate does not take (they run on LiteRT's own kernels and
  split the delegated graph: the number of partitions), and the whole file's median time.

Both name what an export form should remove: ops outside the delegate, conversions between
int8 and float, transposes around layout-bound ops.
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch

from ..extras import require
from .runtimes import format_of

__all__ = ["OpProfile", "op_profile", "format_op_profile"]

#: how XNNPACK names its operators' events: "Convolution (NHWC, QC8) DWConv #3"
_XNNPACK_EVENT = re.compile(r"^[A-Z][A-Za-z0-9 ]* \(")


@dataclass
class OpProfile:
    """An exported file's per-operator profile (:func:`op_profile`).

    ``ops``: one entry per operator, in execution order, ``{"name", "kind", "ms"}`` (``ms`` None
    where the runtime gives no per-op time); ``total_ms``: the whole call's median; ``counts``:
    operators by kind; ``outside``: kinds the accelerated backend does not take, with counts;
    ``partitions``: delegated subgraphs (1 when everything is delegated)."""

    path: str
    runtime: str
    runs: int
    threads: int
    total_ms: float
    ops: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    outside: dict = field(default_factory=dict)
    partitions: int = 1

    def by_kind(self) -> list[tuple[str, int, Optional[float]]]:
        """``(kind, count, total ms or None)``, slowest first (by count without times)."""
        ms: dict = {}
        for op in self.ops:
            if op["ms"] is not None:
                ms[op["kind"]] = ms.get(op["kind"], 0.0) + op["ms"]
        rows = [(k, n, ms.get(k)) for k, n in self.counts.items()]
        return sorted(rows, key=lambda r: (-(r[2] or 0.0), -r[1], r[0]))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["by_kind"] = [{"kind": k, "count": n, "ms": t} for k, n, t in self.by_kind()]
        return d


def _input(shape, dtype) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(dtype)


def _pte_profile(path: Path, runs: int, threads: int) -> OpProfile:
    require("executorch.devtools", "Profiling a .pte file")
    from executorch.devtools import Inspector
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    from .executorch_export import set_threads

    set_threads(threads)
    try:
        module = _load_for_executorch(str(path), enable_etdump=True)
    except Exception as e:  # noqa: BLE001 - the runtime raises RuntimeError / ValueError for a bad file
        raise ValueError(f"{path}: ExecuTorch cannot load it as a program ({str(e).splitlines()[0][:200]})") from None
    meta = module.method_meta("forward")
    x = _input(meta.input_tensor_meta(0).sizes(), torch.float32)
    for _ in range(runs):
        module.forward([x])
    with tempfile.TemporaryDirectory() as tmp:
        dump = os.path.join(tmp, "profile.etdp")
        module.write_etdump_result_to_file(dump)
        frame = Inspector(etdump_path=dump).to_dataframe()
    ops, total = [], None
    for name, raw in zip(frame["event_name"], frame["raw"]):
        if not raw or name in ("Method::init", "Program::load_method"):
            continue
        med = float(statistics.median(raw))
        if name == "Method::execute":
            total = med
        elif name != "DELEGATE_CALL":
            ops.append({"name": name, "kind": re.sub(r" #\d+$", "", name), "ms": med})
    if total is None:
        raise ValueError(f"{path}: ExecuTorch recorded no execution (was it built with the event tracer?)")
    portable = [op for op in ops if not _XNNPACK_EVENT.match(op["name"])]  # ExecuTorch's own kernels
    outside = dict(Counter(op["kind"] for op in portable))
    return OpProfile(str(path), "executorch", runs, threads, total, ops, dict(Counter(op["kind"] for op in ops)),
                     outside, 1)


def _tflite_kinds(path: Path) -> list[str]:
    """``"OP (TYPE)"`` of every operator of a ``.tflite`` file, in order (TYPE: its first input's)."""
    from ai_edge_litert import schema_py_generated as s

    names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(s.TensorType).items() if not k.startswith("_")}
    model = s.Model.GetRootAsModel(path.read_bytes(), 0)
    g = model.Subgraphs(0)
    kinds = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        first = next((op.Inputs(j) for j in range(op.InputsLength()) if op.Inputs(j) >= 0), None)
        kinds.append(f"{name} ({types[g.Tensors(first).Type()]})" if first is not None else name)
    return kinds


def _tflite_profile(path: Path, runs: int, threads: int) -> OpProfile:
    require("ai_edge_litert", "Profiling a .tflite file")
    from ai_edge_litert.interpreter import Interpreter

    from .litert_export import _quiet

    kinds = _tflite_kinds(path)
    with _quiet():
        # one XNNPACK partition per operator it takes: the operators without one run outside it
        single = Interpreter(model_path=str(path), num_threads=threads, experimental_disable_delegate_node_fusion=True)
        single.allocate_tensors()
        interp = Interpreter(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
    details = single._get_ops_details()
    delegated = {tuple(d["outputs"]) for d in details if d["op_name"] == "DELEGATE"}
    original = [d for d in details if d["op_name"] != "DELEGATE"]
    outside = Counter(kinds[d["index"]] for d in original if tuple(d["outputs"]) not in delegated)
    partitions = sum(d["op_name"] == "DELEGATE" for d in interp._get_ops_details())
    inp = interp.get_input_details()[0]
    x = _input(inp["shape"], torch.float32).numpy()
    if inp["dtype"] != x.dtype:  # an INT8 file's int8 input
        scale, zero = inp["quantization"]
        x = (x / scale + zero).round().clip(-128, 127).astype(inp["dtype"])
    times = []
    for i in range(runs + 3):
        interp.set_tensor(inp["index"], x)
        t = time.perf_counter()
        interp.invoke()
        if i >= 3:
            times.append((time.perf_counter() - t) * 1e3)
    ops = [{"name": f"{k} #{i}", "kind": k, "ms": None} for i, k in enumerate(kinds)]
    return OpProfile(str(path), "litert", runs, threads, statistics.median(times), ops, dict(Counter(kinds)),
                     dict(outside), partitions)


def op_profile(path: Union[str, os.PathLike], runs: int = 30, threads: int = 2) -> OpProfile:
    """Profile an exported ``.pte`` (per XNNPACK operator) or ``.tflite`` file (operators, what
    runs outside the XNNPACK delegate, whole-file time) in its runtime, on a random input of the
    file's shape, ``runs`` times with ``threads`` threads."""
    p = Path(path)
    fmt = format_of(p)
    if fmt not in ("executorch", "tflite"):
        raise ValueError(f"{p}: per-op profiles are for ExecuTorch .pte and LiteRT .tflite files; got {p.suffix or 'no suffix'!r}"
                         " (ONNX Runtime: `mobilenets bench`)")
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {p}")
    if runs < 1 or threads < 1:
        raise ValueError(f"runs and threads must be >= 1; got runs={runs}, threads={threads}")
    return (_pte_profile if fmt == "executorch" else _tflite_profile)(p, runs, threads)


def format_op_profile(prof: OpProfile, top: int = 10) -> str:
    """A table by operator kind, then the ``top`` slowest operators (where timed)."""
    timed = any(op["ms"] is not None for op in prof.ops)
    lines = [f"{prof.path} ({prof.runtime}, {prof.threads} threads, median of {prof.runs} runs): "
             f"{prof.total_ms:.3f} ms per call, {len(prof.ops)} operators"
             + (f", {sum(op['ms'] for op in prof.ops):.3f} ms inside them" if timed else "")]
    if prof.runtime == "litert":
        left = sum(prof.outside.values())
        lines.append(f"outside XNNPACK: {left} operator(s), {prof.partitions} delegated partition(s)"
                     + (": " + ", ".join(f"{k} x{n}" for k, n in sorted(prof.outside.items(), key=lambda kv: -kv[1]))
                        if left else ""))
    width = max((len(k) for k in prof.counts), default=4)
    lines.append(f"{'operator':<{width}}  count" + ("        ms" if timed else ""))
    for kind, n, ms in prof.by_kind():
        lines.append(f"{kind:<{width}}  {n:5d}" + (f"  {ms:8.3f}" if timed and ms is not None else ""))
    if timed and top:
        lines.append(f"slowest {top}:")
        for op in sorted(prof.ops, key=lambda o: -(o["ms"] or 0.0))[:top]:
            lines.append(f"  {op['ms']:8.3f} ms  {op['name']}")
    return "\n".join(lines)
