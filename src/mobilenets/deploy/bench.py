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
calibrated on ``calib`` images like ``ort_int8``.

Reference libraries (timm, torchvision, onnxruntime) are optional: a path whose library is
missing, or that fails to build, is skipped with a note, never silently.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import torch
import torch.nn as nn

from ..models.info import model_info
from .timing import interleaved_timings, machine_info, quantile, ratio_spread  # noqa: F401  (re-exported)

OURS = ("eager", "fused_cl", "fused_onednn", "compile", "ort_fp32", "ort_int8")
#: on-device runtimes (``pip install 'mobilenets[mobile]'``): ExecuTorch with XNNPACK, LiteRT
MOBILE = ("et_xnnpack_fp32", "et_xnnpack_int8", "litert_fp32", "litert_int8")
REFERENCE = ("timm_eager", "timm_ort", "tv_eager")
ALL_PATHS = OURS + MOBILE + REFERENCE
#: the paths whose output is a quantized model's (their difference to fp32 is reported, not checked)
INT8_PATHS = ("ort_int8", "et_xnnpack_int8", "litert_int8")
LABELS = {"eager": "ours eager", "fused_cl": "ours fused + channels_last",
          "fused_onednn": "ours fused + oneDNN prepacked", "compile": "ours torch.compile",
          "ort_fp32": "ours ONNX Runtime fp32", "ort_int8": "ours ONNX Runtime INT8",
          "et_xnnpack_fp32": "ours ExecuTorch XNNPACK fp32", "et_xnnpack_int8": "ours ExecuTorch XNNPACK INT8",
          "litert_fp32": "ours LiteRT fp32", "litert_int8": "ours LiteRT INT8",
          "timm_eager": "timm eager", "timm_ort": "timm -> ONNX Runtime fp32",
          "tv_eager": "torchvision eager"}
FP32_OURS = ("eager", "fused_cl", "fused_onednn", "compile", "ort_fp32", "et_xnnpack_fp32", "litert_fp32")


# --- building the paths ----------------------------------------------------------------------
@dataclass
class Built:
    """What :func:`build_paths` produced for one model and input."""

    fns: dict = field(default_factory=dict)      # path -> zero-argument callable
    outputs: dict = field(default_factory=dict)  # path -> logits on the benchmark input
    notes: dict = field(default_factory=dict)    # path -> why it was skipped
    build_s: dict = field(default_factory=dict)  # path -> seconds to build (export, compile...)
    temp_dir: Optional[tempfile.TemporaryDirectory] = None


def randomize_bn_stats(model: nn.Module, seed: int = 0, size: int = 224) -> nn.Module:
    """Non-trivial BatchNorm running statistics (random weights alone leave mean 0 / var 1),
    calibrated on a random batch so the model stays well conditioned and the fp32 paths can be
    checked against each other (:func:`mobilenets.layers.bn_stats.calibrate_bn_stats`)."""
    from ..layers.bn_stats import calibrate_bn_stats

    g = torch.Generator().manual_seed(seed)
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return calibrate_bn_stats(model, torch.randn(4, conv.in_channels, size, size, generator=g), g)


def reference_models(name: str) -> tuple[Optional[nn.Module], Optional[nn.Module], dict]:
    """(timm model, torchvision model, notes) for registry model ``name``, random weights; each is
    ``None`` with a note when the library is missing or has no such model."""
    from ..models import get_entry

    ref = get_entry(name).reference
    notes: dict = {}
    timm_model = tv_model = None
    if ref.get("timm"):
        try:
            import timm
            timm_model = timm.create_model(ref["timm"], pretrained=False).eval()
        except ImportError:
            notes["timm_eager"] = notes["timm_ort"] = "timm not installed (pip install timm)"
    else:
        notes["timm_eager"] = notes["timm_ort"] = "timm has no such model"
    if ref.get("torchvision"):
        try:
            import torchvision
            tv_model = getattr(torchvision.models, ref["torchvision"])(weights=None).eval()
        except ImportError:
            notes["tv_eager"] = "torchvision not installed"
    else:
        notes["tv_eager"] = "torchvision has no such model"
    return timm_model, tv_model, notes


def _ort_session(path: str, threads: int):
    # ORT's worker threads spin after each run by default; interleaved with PyTorch paths they
    # would steal the cores from the next path (measured: benchmarks/RESULTS.md), so no spinning
    from .ort import ort_session

    return ort_session(path, threads=threads, spinning=False)


def _ort_fn(sess, x: torch.Tensor) -> tuple[Callable[[], object], torch.Tensor]:
    feed = {sess.get_inputs()[0].name: x.numpy()}
    out = sess.run(None, feed)[0]
    return (lambda: sess.run(None, feed)), torch.from_numpy(out)


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def build_paths(name: str, batch: int, size: int = 224, threads: int = 2,
                paths: Sequence[str] = ALL_PATHS, calib: str = "fake", calib_count: int = 32,
                model: Optional[nn.Module] = None, seed: int = 0,
                log: Callable[[str], None] = lambda s: None) -> Built:
    """Build every requested path for ``name`` on a ``(batch, 3, size, size)`` input.

    ``model``: use this model (e.g. trained weights) instead of one carrying the reference's
    random weights; the references then keep their own random weights and are timed only.
    """
    from ..factory import create_model
    from .fuse import fuse
    from .onnx_export import export_onnx

    unknown = [p for p in paths if p not in ALL_PATHS]
    if unknown:
        raise ValueError(f"unknown benchmark path(s) {unknown}; expected any of {list(ALL_PATHS)}")
    built = Built(temp_dir=tempfile.TemporaryDirectory(prefix="mobilenets-bench-"))
    tmp = Path(built.temp_dir.name)
    timm_model, tv_model, notes = reference_models(name) if any(p in REFERENCE for p in paths) else (None, None, {})
    built.notes.update({p: n for p, n in notes.items() if p in paths})
    same_weights = model is None
    if model is None:
        src = timm_model if timm_model is not None else tv_model
        if src is not None:
            randomize_bn_stats(src, seed, size)
            model = create_model(name, pretrained=src.state_dict())
        else:
            torch.manual_seed(seed)
            model = randomize_bn_stats(create_model(name), seed, size)
    model = model.eval()
    in_chans = model_info(model).in_chans
    x = torch.randn(batch, in_chans, size, size, generator=torch.Generator().manual_seed(seed + batch))
    have_ort = _have("onnxruntime") and _have("onnx")

    def add(path: str, make: Callable[[], tuple[Callable, torch.Tensor]]) -> None:
        if path not in paths or path in built.notes:
            return
        t0 = time.perf_counter()
        try:
            with _quiet():
                fn, out = make()
        except Exception as e:  # noqa: BLE001 - a path that cannot be built is reported, not fatal
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            built.notes[path] = f"failed: {type(e).__name__}: {msg[:160]}"
            log(f"  {path}: {built.notes[path]}")
            return
        built.fns[path], built.outputs[path] = fn, out
        built.build_s[path] = time.perf_counter() - t0

    def eager(net: nn.Module, inp: torch.Tensor):
        def fn():
            with torch.inference_mode():
                return net(inp)
        return fn, fn()

    add("eager", lambda: eager(model, x))

    fused = None

    def fused_cl():
        nonlocal fused
        fused = fuse(copy.deepcopy(model)).to(memory_format=torch.channels_last)

        def fn():
            with torch.inference_mode():
                return fused(x.contiguous(memory_format=torch.channels_last))
        return fn, fn()

    add("fused_cl", fused_cl)

    def fused_onednn():
        from .cpu import optimize_for_cpu
        net = optimize_for_cpu(model, input_size=(size, size), batch_size=batch)

        def fn():
            with torch.inference_mode():
                return net(x.contiguous(memory_format=torch.channels_last))
        return fn, fn()

    add("fused_onednn", fused_onednn)

    def compiled():
        net = fused if fused is not None else fuse(copy.deepcopy(model)).to(memory_format=torch.channels_last)
        cnet = torch.compile(net, dynamic=False)

        def fn():
            with torch.inference_mode():
                return cnet(x.contiguous(memory_format=torch.channels_last))
        fn()  # compiles
        return fn, fn()

    add("compile", compiled)

    if not have_ort:
        for p in ("ort_fp32", "ort_int8", "timm_ort"):
            if p in paths:
                built.notes.setdefault(p, "onnxruntime / onnx not installed (pip install onnx onnxruntime)")
    fp32_file = tmp / "ours_fp32.onnx"

    def ort_fp32():
        export_onnx(model, fp32_file, input_size=(size, size), dynamic_batch=True, verify=False)
        return _ort_fn(_ort_session(str(fp32_file), threads), x)

    add("ort_fp32", ort_fp32)

    def ort_int8():
        from . import calibration_batches, quantize_onnx
        data = calibration_batches(calib, count=calib_count, input_size=(size, size), in_chans=in_chans)
        out = tmp / "ours_int8.onnx"
        quantize_onnx(fp32_file if fp32_file.exists() else model, out, data, input_size=(size, size),
                      dynamic_batch=True)
        return _ort_fn(_ort_session(str(out), threads), x)

    add("ort_int8", ort_int8)

    def mobile(runtime: str, int8: bool):
        def make():
            if runtime == "et":
                from .executorch_export import PteRunner, export_executorch
                export, runner, suffix = export_executorch, PteRunner, ".pte"
            else:
                from .litert_export import TfliteRunner, export_tflite
                export, runner, suffix = export_tflite, TfliteRunner, ".tflite"
            f = tmp / f"ours_{runtime}_{'int8' if int8 else 'fp32'}{suffix}"
            calib_data = None
            if int8:
                from . import calibration_batches
                calib_data = calibration_batches(calib, count=calib_count, input_size=(size, size), in_chans=in_chans)
            export(model, f, input_size=(size, size), calib=calib_data, batch_size=batch, verify=False)
            r = runner(f, threads=threads)
            return (lambda: r(x)), r(x)
        return make

    for p, rt, q in (("et_xnnpack_fp32", "et", False), ("et_xnnpack_int8", "et", True),
                     ("litert_fp32", "litert", False), ("litert_int8", "litert", True)):
        if p in paths and not _have("executorch" if rt == "et" else "litert_torch"):
            built.notes.setdefault(p, f"{'executorch' if rt == 'et' else 'litert-torch'} not installed "
                                      f"(pip install 'mobilenets[mobile]')")
        add(p, mobile(rt, q))

    if timm_model is not None:
        add("timm_eager", lambda: eager(timm_model, x))

        def timm_ort():
            f = tmp / "timm.onnx"
            torch.onnx.export(timm_model, (x,), str(f), input_names=["input"], output_names=["logits"],
                              opset_version=17, dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              dynamo=False)
            return _ort_fn(_ort_session(str(f), threads), x)

        add("timm_ort", timm_ort)
    if tv_model is not None:
        add("tv_eager", lambda: eager(tv_model, x))

    # every fp32 path must compute what our eager model computes (references: when they share
    # our weights); a mismatch makes the whole comparison meaningless, so it is an error
    ref = built.outputs.get("eager")
    check = list(FP32_OURS) + (["timm_eager", "timm_ort"] if same_weights and timm_model is not None else [])
    if same_weights and timm_model is None and tv_model is not None:
        check.append("tv_eager")
    if ref is not None:
        for p in check:
            if p in built.outputs and p != "eager":
                rel = float((built.outputs[p] - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
                if rel > 1e-3:
                    raise RuntimeError(f"{name}: path {p} disagrees with eager (relative max diff {rel:.2e})")
    return built


def _have(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


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

    def goals(self) -> list[str]:
        """The deployment goals, checked on this run's ratios (one line per model and batch)."""
        out = []
        by = {}
        for r in self.rows:
            by.setdefault((r.model, r.batch), {})[r.path] = r
        for (model, batch), rs in by.items():
            ms = {p: r.ms for p, r in rs.items() if r.ms is not None}
            parts = []
            fused = {p: ms[p] for p in ("fused_cl", "fused_onednn") if p in ms}
            if fused and "timm_eager" in ms:
                best = min(fused, key=fused.get)
                v = fused[best] / ms["timm_eager"]
                parts.append(f"fused ({best})/timm eager {v:.2f} ({'met' if v <= 0.7 else 'not met'}, goal <= 0.7)")
            fp32 = {p: ms[p] for p in FP32_OURS if p in ms}
            if fp32 and "timm_ort" in ms:
                best = min(fp32, key=fp32.get)
                v = fp32[best] / ms["timm_ort"]
                parts.append(f"best fp32 ({best})/timm ORT {v:.2f} ({'met' if v <= 1.0 else 'not met'}, goal <= 1.0)")
            if fp32 and self.roofline_ms(model, batch):
                v = min(fp32.values()) / self.roofline_ms(model, batch)
                parts.append(f"best fp32/roofline limit {v:.2f} ({'met' if v <= 1.5 else 'not met'}, goal <= 1.5)")
            for q, f, what in (("et_xnnpack_int8", "et_xnnpack_fp32", "ExecuTorch"), ("litert_int8", "litert_fp32", "LiteRT")):
                if q in ms and f in ms:
                    v = ms[q] / ms[f]
                    parts.append(f"{what} INT8/fp32 {v:.2f} ({'met' if v <= 0.5 else 'not met'}, goal <= 0.5)")
            if "et_xnnpack_fp32" in ms and "ort_fp32" in ms:
                parts.append(f"ExecuTorch fp32/ORT fp32 {ms['et_xnnpack_fp32'] / ms['ort_fp32']:.2f}")
            if "ort_int8" in ms and "timm_ort" in ms:
                v = ms["ort_int8"] / ms["timm_ort"]
                parts.append(f"INT8/timm ORT {v:.2f} ({'met' if v <= 0.5 else 'not met'}, goal <= 0.5)")
            if parts:
                out.append(f"{model} b{batch}: " + "; ".join(parts))
        return out

    def table(self, markdown: bool = False) -> str:
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
            body.append([r.model, r.batch, mmacs, LABELS.get(r.path, r.path), f(r.ms), spread, f(r.vs_timm_ort),
                         f(r.vs_timm_eager), f(r.vs_roofline), note])
        if not markdown:
            return table(headers, body, [False, True, True, False, True, True, True, True, True, False])
        lines = ["| " + " | ".join(headers) + " |",
                 "|" + "|".join(["---", "---:", "---:", "---", "---:", "---:", "---:", "---:", "---:", "---"]) + "|"]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
        return "\n".join(lines)


def bench(names: Iterable[str], batches: Sequence[int] = (1, 32), threads: int = 2, size: int = 224,
          paths: Sequence[str] = ALL_PATHS, repeats: Optional[int] = None, warmup: Optional[int] = None,
          calib: str = "fake", calib_count: int = 32, seconds: float = 4.0,
          log: Callable[[str], None] = lambda s: None, progress: Optional[Callable] = None) -> BenchReport:
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
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        info = machine_info(threads)
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
