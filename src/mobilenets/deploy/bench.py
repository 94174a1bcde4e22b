"""Side-by-side CPU inference benchmark: our deployment paths against the reference libraries.

For each model and batch size, one run builds and times (same input tensor, same threads):

ours
    ``eager`` (the model as built), ``fused_cl`` (:func:`~mobilenets.deploy.fuse` + channels-last
    memory format; the input conversion is timed), ``fused_onednn``
    (:func:`~mobilenets.deploy.optimize_for_cpu`: fused, channels-last, oneDNN prepacked convs
    with fused activations; still eager PyTorch), ``compile`` (``torch.compile`` of the fused
    channels-last model, when it compiles), ``ort_fp32`` (:func:`~mobilenets.deploy.export_onnx`,
    run by ONNX Runtime), ``ort_int8`` (:func:`~mobilenets.deploy.quantize_onnx`, static INT8
    calibrated on ``calib`` images);
reference
    ``timm_eager``, ``timm_ort`` (timm's model exported with ``torch.onnx.export`` and run by ONNX
    Runtime: the usual route today), ``tv_eager`` (torchvision, where it has the model).

The reference models get random weights and randomized BatchNorm statistics; ours load them,
so every fp32 path computes the same function, and each one's output is checked against our
eager output before timing (1e-3 relative; INT8 reports its difference instead: its accuracy is
measured on real data by ``benchmarks/bench_int8.py``).

Timing is interleaved: in each round every path runs ``k`` iterations (about 50 ms of work), the
path order rotating from round to round, so drift in machine speed hits all paths alike. The
figure per path is the median per-iteration latency; ratios are taken between medians of the
same run. The roofline limit is ``MACs / peak MAC rate`` with the peak measured at the start of
the run as an upper bound: the best of several fp32 GEMM shapes, warmed, on all the run's
threads (:func:`mobilenets.analysis.calibrate.measure_peak`; one square matmul was beaten by
ONNX Runtime on an AVX-512 machine), reported beside the theoretical figure cores x clock x FMA
width from the CPU flags (:func:`~mobilenets.analysis.calibrate.cpu_theoretical_peak`). INT8
rows get no roofline ratio: the limit is an fp32 one.

On-device paths (``pip install 'mobilenets[mobile]'``): ``et_xnnpack_fp32`` / ``et_xnnpack_int8``
(:func:`~mobilenets.deploy.export_executorch`, run by ExecuTorch's runtime) and ``litert_fp32`` /
``litert_int8`` (:func:`~mobilenets.deploy.export_tflite`, run by LiteRT's Interpreter), INT8
calibrated on ``calib`` images like ``ort_int8``. When both runtimes are asked for, the LiteRT
paths are timed in a separate process (``one_process`` to keep them here): each runtime keeps
its own XNNPACK thread pool, and side by side they slowed each other.

Reference libraries (timm, torchvision, onnxruntime) are optional: a path whose library is
missing, or that fails to build, is skipped with a note, never silently.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import torch

from .bench_paths import ALL_PATHS, FP32_OURS, INT8_PATHS, LABELS, build_paths  # noqa: F401  (FP32_OURS re-exported)
from .timing import interleaved_timings, machine_info, quantile, ratio_spread  # noqa: F401  (re-exported)

# --- the benchmark ---------------------------------------------------------------------------
@dataclass
class BenchRow:
    """One (model, batch, path) measurement."""

    model: str
    batch: int
    path: str
    ms: Optional[float] = None
    p25: Optional[float] = None
    p75: Optional[float] = None
    n: int = 0
    note: str = ""
    vs_timm_ort: Optional[float] = None
    vs_timm_eager: Optional[float] = None
    vs_roofline: Optional[float] = None
    rel_diff: Optional[float] = None  # INT8: max |out - fp32 eager| / max |fp32 eager| on the input
    build_s: Optional[float] = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class BenchReport:
    """Result of :func:`bench`: rows, the machine, the measured peak and per-model MACs."""

    rows: list
    machine: dict
    peak_macs: Optional[float]
    macs: dict  # model -> MACs per image at the run's size
    size: int

    def as_dict(self) -> dict:
        return {"machine": self.machine, "peak_macs_per_s": self.peak_macs, "size": self.size,
                "macs_per_image": self.macs, "rows": [r.as_dict() for r in self.rows]}

    def peak_line(self) -> str:
        """The roofline's peak: measured (best GEMM shape) and theoretical (from the CPU flags)."""
        line = f"peak {self.peak_macs / 1e9:.1f} GMAC/s measured (best of {len(self.machine.get('peak_per_shape', {})) or 1} fp32 GEMM shapes)"
        if self.machine.get("theoretical_peak"):
            line += f"; theoretical {self.machine['theoretical_peak']}"
        return line

    def roofline_ms(self, model: str, batch: int) -> Optional[float]:
        if not self.peak_macs or model not in self.macs:
            return None
        return self.macs[model] * batch / self.peak_macs * 1e3

    def table(self, markdown: bool = False) -> str:
        from ..archs.spec import model_label
        from ..textutil import table

        headers = ["model", "batch", "MMACs", "path", "ms", "p25-p75", "x timm ORT", "x timm eager", "x roofline", "note"]
        body = []
        for r in self.rows:
            f = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
            note = r.note
            if r.rel_diff is not None:
                note = (note + "; " if note else "") + f"diff vs fp32 {100 * r.rel_diff:.1f}% of max logit"
            spread = "-" if r.p25 is None else f"{r.p25:.2f}-{r.p75:.2f}"
            mmacs = f"{self.macs[r.model] * r.batch / 1e6:.0f}" if r.model in self.macs else "-"
            body.append([model_label(r.model), r.batch, mmacs, LABELS.get(r.path, r.path), f(r.ms), spread, f(r.vs_timm_ort),
                         f(r.vs_timm_eager), f(r.vs_roofline), note])
        if not markdown:
            return table(headers, body, [False, True, True, False, True, True, True, True, True, False])
        lines = ["| " + " | ".join(headers) + " |",
                 "|" + "|".join(["---", "---:", "---:", "---", "---:", "---:", "---:", "---:", "---:", "---"]) + "|"]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
        return "\n".join(lines)


#: the path prefixes of runtimes that each keep their own XNNPACK thread pool in the process
_POOL_RUNTIMES = {"et_xnnpack": "ExecuTorch", "litert": "LiteRT"}


def mixed_runtime_note(paths: Sequence[str]) -> Optional[str]:
    """A warning when ``paths`` time ExecuTorch and LiteRT in one process (None otherwise): each
    keeps its own XNNPACK thread pool, and with both on the same cores they can slow each other
    (Mobile-Former's LiteRT fp32 file: 2.5 ms alone, 3.9-5.4 ms beside a loaded ExecuTorch
    program in some runs; benchmarks/INT8.md)."""
    present = [label for prefix, label in _POOL_RUNTIMES.items() if any(p.startswith(prefix) for p in paths)]
    if len(present) < 2:
        return None
    return (f"note: {' and '.join(present)} ran in one process; each keeps its own XNNPACK thread pool and they can "
            "slow each other: compare their paths within a runtime, or time each runtime in its own run "
            "(--paths et_xnnpack_fp32,et_xnnpack_int8, then --paths litert_fp32,litert_int8)")


#: what a separate process times beside the LiteRT paths, when requested: the fp32 output INT8 is
#: compared with and the references its ratios are taken against, timed in that same process
_BESIDE = ("eager", "timm_ort", "timm_eager")


def _bench_child(kwargs: dict, log: Callable[[str], None]) -> BenchReport:
    """:func:`bench` with ``kwargs`` run in a fresh Python process (its report read back); a
    failure becomes rows with the reason as their note."""
    import json
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    pkg = str(Path(__file__).resolve().parents[2])
    code = ("import json, sys; from mobilenets.deploy.bench import bench; "
            "r = bench(**json.loads(sys.argv[1]), one_process=True); "
            "open(sys.argv[2], 'w').write(json.dumps(r.as_dict()))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(x for x in (pkg, os.environ.get("PYTHONPATH")) if x)}
    with tempfile.TemporaryDirectory(prefix="mobilenets-bench-") as d:
        out = Path(d) / "report.json"
        res = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs), str(out)], env=env,
                             capture_output=True, text=True)
        if res.returncode != 0 or not out.exists():
            why = (res.stderr.strip().splitlines() or ["no output"])[-1]
            log(f"  the separate process failed: {why}")
            rows = [BenchRow(n, b, p, note=f"separate process failed: {why}")
                    for n in kwargs["names"] for b in kwargs["batches"] for p in kwargs["paths"]]
            return BenchReport(rows, {}, None, {}, kwargs["size"])
        data = json.loads(out.read_text())
    return BenchReport([BenchRow(**r) for r in data["rows"]], data["machine"], data["peak_macs_per_s"],
                       data["macs_per_image"], data["size"])


def bench(names: Iterable[str], batches: Sequence[int] = (1, 32), threads: int = 2, size: int = 224,
          paths: Sequence[str] = ALL_PATHS, repeats: Optional[int] = None, warmup: Optional[int] = None,
          calib: str = "fake", calib_count: int = 32, seconds: float = 4.0,
          log: Callable[[str], None] = lambda s: None, progress: Optional[Callable] = None,
          one_process: bool = False) -> BenchReport:
    """Run the side-by-side benchmark (see the module docstring) and return its report.

    Args:
        names: registry names. batches: batch sizes. threads: ``torch.set_num_threads`` and ONNX
            Runtime intra-op threads. size: input resolution.
        paths: which paths to run (default: all; see ``ALL_PATHS``).
        repeats: timed iterations per path (default: about ``seconds`` of the slowest path,
            10..150). warmup: untimed iterations (default 10 at batch 1, 3 otherwise).
        calib, calib_count: calibration data for INT8 (``fake``, ``digits`` or an image folder).
        log: called with progress lines (complete lines: the CLI prints them on stderr, so a
            redirected log reads as well as a terminal). progress: a callable wrapping the (model,
            batch) loop, e.g. ``lambda jobs: mobilenets.progress.progress_iter(jobs, "bench")``
            (a bar on a terminal, a line per quarter otherwise).
        one_process: time ExecuTorch and LiteRT in this one process. By default, when both are
            asked for, the LiteRT paths run in a separate process first (with ``eager`` and the
            timm references, where asked for, so their INT8 difference and ratios are taken in
            that process): each runtime keeps its own XNNPACK thread pool, and in one process
            they slowed each other (benchmarks/INT8.md). The report's ``machine["separate_process"]``
            names those paths.

    Raises:
        ValueError: unknown model, path, or non-positive batch / threads / size.
    """
    from ..factory import create_model
    from ..models import get_entry
    from ..analysis import profile
    from ..analysis.calibrate import PEAK_SHAPES, cpu_theoretical_peak, measure_peak

    names = list(names)
    for n in names:
        get_entry(n)  # raises UnknownModelError with close matches
    if not names:
        raise ValueError("bench needs at least one model name")
    if any(int(b) < 1 for b in batches) or threads < 1 or size < 32:
        raise ValueError(f"batch sizes and threads must be >= 1 and size >= 32, got batches {list(batches)}, "
                         f"threads {threads}, size {size}")
    unknown = [p for p in paths if p not in ALL_PATHS]
    if unknown:
        raise ValueError(f"unknown benchmark path(s) {unknown}; expected any of {list(ALL_PATHS)}")
    separate = [] if one_process or mixed_runtime_note(paths) is None else [p for p in paths if p.startswith("litert")]
    if separate:
        beside = [p for p in _BESIDE if p in paths]
        log(f"timing {', '.join(separate)} in a separate process (ExecuTorch and LiteRT slow each other in one)")
        child = _bench_child(dict(names=names, batches=[int(b) for b in batches], threads=threads, size=size,
                                  paths=separate + beside, repeats=repeats, warmup=warmup, calib=calib,
                                  calib_count=calib_count, seconds=seconds), log)
        here = bench(names, batches, threads, size, [p for p in paths if p not in separate], repeats, warmup, calib,
                     calib_count, seconds, log, progress, one_process=True)
        order = {(n, int(b), p): i for i, (n, b, p) in enumerate((n, b, p) for n in names for b in batches for p in paths)}
        rows = here.rows + [r for r in child.rows if r.path in separate]
        here.rows = sorted(rows, key=lambda r: order.get((r.model, r.batch, r.path), len(order)))
        here.machine["separate_process"] = {"paths": separate, "pid": child.machine.get("pid"),
                                            "peak_macs_per_s": child.peak_macs}
        return here
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        info = machine_info(threads)
        info["pid"] = os.getpid()
        log(f"measuring the peak fp32 MAC rate ({threads} threads, {len(PEAK_SHAPES)} GEMM shapes)...")
        measured = measure_peak()
        peak = measured.best
        theory = cpu_theoretical_peak(threads)
        info["peak_per_shape"] = {k: round(v / 1e9, 2) for k, v in measured.per_shape.items()}
        if theory is not None:
            info["theoretical_peak"] = theory.describe()
            info["theoretical_peak_macs_per_s"] = theory.macs
        log(f"peak {peak / 1e9:.1f} GMAC/s measured" + (f"; theoretical {theory.describe()}" if theory else ""))
        macs = {n: profile(create_model(n), input_size=(size, size)).macs for n in names}
        rows: list[BenchRow] = []
        jobs = [(n, b) for n in names for b in batches]
        for name, batch in (progress(jobs) if progress else jobs):
            log(f"{name} batch {batch}: building {', '.join(paths)}")
            built = build_paths(name, batch, size, threads, paths, calib, calib_count, log=log)
            try:
                w = warmup if warmup is not None else (10 if batch == 1 else 3)
                res = interleaved_timings(built.fns, repeats, w, seconds) if built.fns else {}
            finally:
                built.temp_dir.cleanup()
            report = BenchReport(rows, info, peak, macs, size)
            limit = report.roofline_ms(name, batch)
            base_ort, base_eager = res.get("timm_ort"), res.get("timm_eager")
            for p in paths:
                if p not in res:
                    rows.append(BenchRow(name, batch, p, note=built.notes.get(p, "skipped")))
                    continue
                t = res[p]
                row = BenchRow(name, batch, p, t["ms"], t["p25"], t["p75"], t["n"],
                               build_s=round(built.build_s.get(p, 0.0), 2))
                row.vs_timm_ort = t["ms"] / base_ort["ms"] if base_ort else None
                row.vs_timm_eager = t["ms"] / base_eager["ms"] if base_eager else None
                # the limit is an fp32 one: INT8 rows get none (their peak is another figure)
                row.vs_roofline = t["ms"] / limit if limit and p not in INT8_PATHS else None
                if p in INT8_PATHS and "eager" in built.outputs:
                    ref = built.outputs["eager"]
                    row.rel_diff = float((built.outputs[p] - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
                rows.append(row)
                log(f"  {LABELS[p]:28s} {t['ms']:8.2f} ms")
            del built
            gc.collect()
        if "loadavg_start" in info:
            info["loadavg_end"] = round(os.getloadavg()[0], 2)
        return BenchReport(rows, info, peak, macs, size)
    finally:
        torch.set_num_threads(old_threads)
