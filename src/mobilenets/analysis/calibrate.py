"""Calibrate the roofline on this machine and check its predictions against measurements.

:func:`calibrate` measures the peak fp32 MAC rate (a large square matmul, best of several
runs) and the memory bandwidth (a copy of a tensor much larger than the caches; a copy reads
and writes every byte, so bytes moved = 2 x size). :func:`predict_vs_measure` predicts each
model's latency with :func:`mobilenets.analysis.roofline` at those figures, measures it
(eager PyTorch, and ONNX Runtime when it is installed), and reports the Spearman rank
correlation between prediction and measurement: the roofline is a ranking tool, so rank
agreement is the figure of merit, not the absolute error.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from .profile import profile as _profile
from .roofline import roofline


@dataclass(frozen=True)
class Calibration:
    """Measured machine figures. peak_macs: MAC/s; mem_bw: bytes/s; threads: torch threads."""

    peak_macs: float
    mem_bw: float
    threads: int

    @property
    def ridge_point(self) -> float:
        return self.peak_macs / self.mem_bw


def _best_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:  # noqa: D401
    for _ in range(warmup):
        fn()
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


@torch.no_grad()
def measure_peak_macs(n: int = 2048, repeats: int = 5) -> float:
    """fp32 MAC/s of an ``n x n @ n x n`` matmul (best of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    t = _best_time(lambda: torch.mm(a, b, out=out), repeats)
    return n ** 3 / t


#: GEMM shapes ``(M, K, N)`` of :func:`measure_peak`: square (the old single figure, 2048),
#: tall-skinny like a 1x1 conv at batch 1 (56x56 positions), wide, and deep-K.
PEAK_SHAPES = ((2048, 2048, 2048), (1024, 1024, 1024), (3136, 256, 1024), (512, 4096, 512), (256, 8192, 1024),
               (4096, 512, 2048))


@dataclass(frozen=True)
class PeakMeasurement:
    """The measured fp32 peak (``best``, MAC/s) and each GEMM shape's figure."""

    best: float
    per_shape: dict   # "MxKxN" -> MAC/s
    threads: int


@torch.no_grad()
def measure_peak(shapes: Sequence[tuple] = PEAK_SHAPES, repeats: int = 5, warmup: int = 3) -> PeakMeasurement:
    """The fp32 MAC rate as an upper bound: the best of several GEMM shapes (each warmed up,
    best of ``repeats``), on all of torch's threads. One square matmul (the old figure) was
    beaten by ONNX Runtime's convolutions; the best of these shapes includes it."""
    per = {}
    for m, k, n in shapes:
        a, b, out = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
        per[f"{m}x{k}x{n}"] = m * k * n / _best_time(lambda: torch.mm(a, b, out=out), repeats, warmup)
    return PeakMeasurement(max(per.values()), per, torch.get_num_threads())


@dataclass(frozen=True)
class TheoreticalPeak:
    """cores x clock x FMA pipes x fp32 lanes: the fp32 MACs a CPU can issue per second."""

    macs: float
    cores: int
    ghz: float
    fma_pipes: int
    lanes: int
    isa: str
    note: str = ""

    def describe(self) -> str:
        return (f"{self.cores} cores x {self.ghz:.2f} GHz x {self.fma_pipes} FMA x {self.lanes} fp32 lanes "
                f"({self.isa}) = {self.macs / 1e9:.1f} GMAC/s" + (f"; {self.note}" if self.note else ""))


def theoretical_peak(flags: Sequence[str], cores: int, ghz: float, vendor: str = "", family: int = 0,
                     fma_pipes: int = 2) -> TheoreticalPeak:
    """The fp32 peak from the CPU flags (``/proc/cpuinfo``), cores and clock.

    Lanes: 16 with ``avx512f``, 8 with ``avx`` / ``fma``, 4 otherwise. AMD family 25 (Zen 3 /
    Zen 4) executes 512-bit instructions on 256-bit pipes, so 8 lanes there. ``fma_pipes``: 2 on
    every x86 core since Haswell / Zen (some Xeon Silver / Bronze have one 512-bit FMA pipe).
    """
    flags = set(flags)
    if "avx512f" in flags and not (vendor == "AuthenticAMD" and family == 25):
        lanes, isa, note = 16, "AVX-512", ""
    elif "avx512f" in flags:
        lanes, isa, note = 8, "AVX-512 on 256-bit pipes", "AMD family 25 splits 512-bit ops in two"
    elif "fma" in flags or "avx2" in flags or "avx" in flags:
        lanes, isa, note = 8, "AVX2/FMA", ""
    else:
        lanes, isa, note = 4, "SSE", ""
    return TheoreticalPeak(cores * ghz * 1e9 * fma_pipes * lanes, cores, ghz, fma_pipes, lanes, isa, note)


def cpu_theoretical_peak(threads: Optional[int] = None, cpuinfo: Optional[str] = None,
                         max_mhz: Optional[float] = None) -> Optional[TheoreticalPeak]:
    """:func:`theoretical_peak` of this machine (Linux: ``/proc/cpuinfo``; the clock is
    ``lscpu``'s "CPU max MHz" when the kernel reports one, else cpuinfo's "cpu MHz", which a VM
    often reports as the base / TSC clock: a boosting core can then beat the figure). ``threads``
    (default torch's) caps the cores. ``None`` where there is no ``/proc/cpuinfo``."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    fields: dict = {}
    cpus = 0
    for line in cpuinfo.splitlines():
        if ":" not in line:
            continue
        k, v = (t.strip() for t in line.split(":", 1))
        if k == "processor":
            cpus += 1
        fields.setdefault(k, v)
    if not cpus or "flags" not in fields:
        return None
    if max_mhz is None:
        with contextlib.suppress(OSError, ValueError):
            max_mhz = float(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1e3
    mhz = max_mhz or float(fields.get("cpu MHz", 0) or 0)
    if not mhz:
        return None
    siblings, per_core = int(fields.get("siblings", cpus) or cpus), int(fields.get("cpu cores", cpus) or cpus)
    smt = max(1, siblings // max(per_core, 1))
    cores = max(1, cpus // smt)
    cores = min(cores, threads or torch.get_num_threads())
    peak = theoretical_peak(fields["flags"].split(), cores, mhz / 1e3, fields.get("vendor_id", ""),
                            int(fields.get("cpu family", 0) or 0))
    if not max_mhz:
        peak = TheoreticalPeak(peak.macs, peak.cores, peak.ghz, peak.fma_pipes, peak.lanes, peak.isa,
                               "; ".join(p for p in (peak.note, "clock: cpuinfo's cpu MHz (no max reported; "
                                                     "a boosting core can exceed this)") if p))
    return peak


@torch.no_grad()
def measure_bandwidth(mbytes: int = 256, repeats: int = 5) -> float:
    """Bytes/s of copying a ``mbytes`` MiB fp32 tensor (read + write counted)."""
    n = mbytes * 2 ** 20 // 4
    src, dst = torch.ones(n), torch.empty(n)
    t = _best_time(lambda: dst.copy_(src), repeats)
    return 2 * n * 4 / t


def calibrate(matmul_size: int = 2048, copy_mbytes: int = 256, repeats: int = 5) -> Calibration:
    """Measure this machine's peak MAC rate and memory bandwidth (see the module docstring)."""
    return Calibration(measure_peak_macs(matmul_size, repeats),
                       measure_bandwidth(copy_mbytes, repeats), torch.get_num_threads())


def _rank(values: Sequence[float]) -> list:
    """1-based ranks, ties get the average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson correlation of the average-tie ranks).

    Raises:
        ValueError: different lengths or fewer than two values. Returns ``nan`` when one side
        is constant.
    """
    if len(x) != len(y):
        raise ValueError(f"spearman: x and y differ in length ({len(x)} vs {len(y)})")
    if len(x) < 2:
        raise ValueError("spearman needs at least two values")
    rx, ry = _rank(list(x)), _rank(list(y))
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return math.nan
    return sxy / math.sqrt(sxx * syy)


def _median_time(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def onnxruntime_available() -> bool:
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _ort_session(model: torch.nn.Module, x: torch.Tensor, threads: int):
    from ..onnxrt import ort_session

    fd, path = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    try:
        with warnings.catch_warnings():  # tracer / constant-folding chatter
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), path, input_names=["input"], output_names=["logits"],
                              opset_version=17, dynamo=False)
        sess = ort_session(path, threads, feature="measuring ONNX Runtime latency")
    finally:
        os.remove(path)
    return sess


@dataclass
class Prediction:
    """One model: predicted and measured latency in seconds (``None``: not measured)."""

    model: str
    macs: int
    bytes: int
    predicted: float
    eager: Optional[float] = None
    onnxruntime: Optional[float] = None


@dataclass
class CalibrationReport:
    """Result of :func:`predict_vs_measure`: per-model rows and the rank correlations."""

    calibration: Calibration
    input_size: tuple
    rows: list = field(default_factory=list)
    errors: dict = field(default_factory=dict)

    def spearman(self, runtime: str = "eager") -> float:
        pairs = [(r.predicted, getattr(r, runtime)) for r in self.rows
                 if getattr(r, runtime) is not None]
        if len(pairs) < 2:
            return math.nan
        return spearman([p for p, _ in pairs], [m for _, m in pairs])

    def spearman_macs(self, runtime: str = "eager") -> float:
        """Baseline: rank correlation of MACs alone with the measurement."""
        pairs = [(r.macs, getattr(r, runtime)) for r in self.rows if getattr(r, runtime) is not None]
        return spearman(*zip(*pairs)) if len(pairs) >= 2 else math.nan

    def table(self) -> str:
        """Markdown table of the rows."""
        c = self.calibration
        lines = [f"Calibration: peak {c.peak_macs / 1e9:.1f} GMAC/s (fp32 matmul), "
                 f"bandwidth {c.mem_bw / 1e9:.1f} GB/s (copy), ridge point "
                 f"{c.ridge_point:.1f} MAC/byte, {c.threads} threads; input "
                 f"{self.input_size[0]}x{self.input_size[1]}, batch 1, fp32.", "",
                 "| model | MMACs | MiB moved | predicted ms | eager ms | ORT ms |",
                 "|---|---:|---:|---:|---:|---:|"]

        def ms(v):
            return "-" if v is None else f"{v * 1e3:.2f}"
        for r in sorted(self.rows, key=lambda r: r.predicted):
            lines.append(f"| {r.model} | {r.macs / 1e6:.1f} | {r.bytes / 2**20:.1f} | "
                         f"{ms(r.predicted)} | {ms(r.eager)} | {ms(r.onnxruntime)} |")
        lines.append("")
        for rt in ("eager", "onnxruntime"):
            if any(getattr(r, rt) is not None for r in self.rows):
                lines.append(f"- Spearman(predicted, {rt}) = {self.spearman(rt):.3f}"
                             f"  (MACs alone: {self.spearman_macs(rt):.3f})")
        for name, err in self.errors.items():
            lines.append(f"- {name}: {err}")
        return "\n".join(lines)


@torch.no_grad()
def predict_vs_measure(names: Sequence[str], calibration: Optional[Calibration] = None,
                       input_size=(224, 224), runtimes: Sequence[str] = ("eager", "onnxruntime"),
                       repeats: int = 10, warmup: int = 3,
                       progress: Optional[Callable[[str], None]] = None) -> CalibrationReport:
    """Predict each model's batch-1 fp32 latency with the calibrated roofline and measure it.

    Args:
        names: registry names. calibration: machine figures (default: :func:`calibrate`).
        input_size: ``(H, W)``. runtimes: ``"eager"`` and/or ``"onnxruntime"`` (skipped when
            not installed). repeats, warmup: timed and untimed runs (median is reported).
        progress: called with a line per model (e.g. ``print``).
    """
    from ..factory import create_model

    unknown = set(runtimes) - {"eager", "onnxruntime"}
    if unknown:
        raise ValueError(f"runtimes must be 'eager' and/or 'onnxruntime', got {sorted(unknown)}")
    cal = calibration or calibrate()
    use_ort = "onnxruntime" in runtimes and onnxruntime_available()
    report = CalibrationReport(cal, tuple(input_size))
    for name in names:
        prof = _profile(name, input_size)
        row = Prediction(name, prof.macs, prof.bytes,
                         roofline(prof, cal.peak_macs, cal.mem_bw).time)
        model = create_model(name).eval()
        x = torch.randn(1, 3, *input_size)
        if "eager" in runtimes:
            row.eager = _median_time(lambda: model(x), repeats, warmup)
        if use_ort:
            try:
                sess = _ort_session(model, x, cal.threads)
                feed = {"input": x.numpy()}
                row.onnxruntime = _median_time(lambda: sess.run(None, feed), repeats, warmup)
            except Exception as e:  # export limits of one model must not stop the table
                report.errors[name] = f"onnxruntime skipped: {type(e).__name__}: {e}".splitlines()[0]
        report.rows.append(row)
        if progress:
            progress(f"{name}: predicted {row.predicted * 1e3:.2f} ms, eager "
                     f"{'-' if row.eager is None else f'{row.eager * 1e3:.2f}'} ms, ORT "
                     f"{'-' if row.onnxruntime is None else f'{row.onnxruntime * 1e3:.2f}'} ms")
    return report
