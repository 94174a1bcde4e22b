"""The benchmark's paths, as one table (:data:`PATHS`: one :class:`PathSpec` row each: key,
label, group, precision, what it needs, how it is built) and :func:`build_paths`, which builds
the requested rows for one model and input and checks every fp32 path against eager. A new
path is one row; :mod:`.bench` times whatever this table holds.
"""

from __future__ import annotations

import contextlib
import copy
import io
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn

from ..models.info import model_info


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


def _have(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


# --- the paths: one table -------------------------------------------------------------------
@dataclass
class PathContext:
    """What every path's builder reads: the model and its input, the run's settings, the
    reference models, a temporary folder and what earlier paths left for later ones."""

    model: nn.Module
    x: torch.Tensor
    size: int
    batch: int
    threads: int
    calib: str
    calib_count: int
    tmp: Path
    timm_model: Optional[nn.Module] = None
    tv_model: Optional[nn.Module] = None
    shared: dict = field(default_factory=dict)   # e.g. the fused model, the fp32 ONNX file

    def calibration(self) -> torch.Tensor:
        from .calibration import calibration_batches

        return calibration_batches(self.calib, count=self.calib_count, input_size=(self.size, self.size),
                                   in_chans=self.x.shape[1])


def _timed(fn: Callable[[], object]) -> tuple[Callable[[], object], object]:
    return fn, fn()


def _eager(net: nn.Module, x: torch.Tensor):
    def fn():
        with torch.inference_mode():
            return net(x)
    return _timed(fn)


def _fused(ctx: PathContext) -> nn.Module:
    from .fuse import fuse

    if "fused" not in ctx.shared:
        ctx.shared["fused"] = fuse(copy.deepcopy(ctx.model)).to(memory_format=torch.channels_last)
    return ctx.shared["fused"]


def _channels_last(net: Callable, ctx: PathContext):
    x = ctx.x.contiguous(memory_format=torch.channels_last)

    def fn():
        with torch.inference_mode():
            return net(x)
    return _timed(fn)


def _build_fused_onednn(ctx: PathContext):
    from .cpu import optimize_for_cpu

    return _channels_last(optimize_for_cpu(ctx.model, input_size=(ctx.size, ctx.size), batch_size=ctx.batch), ctx)


def _build_compile(ctx: PathContext):
    net = torch.compile(_fused(ctx), dynamic=False)
    _channels_last(net, ctx)  # compiles
    return _channels_last(net, ctx)


def _fp32_onnx(ctx: PathContext) -> Path:
    from .onnx_export import export_onnx

    f = ctx.tmp / "ours_fp32.onnx"
    if not f.exists():
        export_onnx(ctx.model, f, input_size=(ctx.size, ctx.size), dynamic_batch=True, verify=False)
    return f


def _build_ort_int8(ctx: PathContext):
    from .ptq import quantize_onnx

    out = ctx.tmp / "ours_int8.onnx"
    quantize_onnx(_fp32_onnx(ctx), out, ctx.calibration(), input_size=(ctx.size, ctx.size), dynamic_batch=True)
    return _ort_fn(_ort_session(str(out), ctx.threads), ctx.x)


def _build_timm_ort(ctx: PathContext):
    f = ctx.tmp / "timm.onnx"
    torch.onnx.export(ctx.timm_model, (ctx.x,), str(f), input_names=["input"], output_names=["logits"],
                      opset_version=17, dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return _ort_fn(_ort_session(str(f), ctx.threads), ctx.x)


def _mobile(runtime: str, int8: bool) -> Callable[[PathContext], tuple]:
    """The builder of an on-device path: export through the runtime's :class:`~.mobile.Runtime`
    (unverified: the benchmark checks the outputs itself), then time its runner."""
    def build(ctx: PathContext):
        from .mobile import export_mobile
        if runtime == "executorch":
            from .executorch_export import EXECUTORCH as rt
        else:
            from .litert_export import LITERT as rt
        f = ctx.tmp / f"ours_{runtime}_{'int8' if int8 else 'fp32'}{rt.suffix}"
        export_mobile(rt, ctx.model, f, (ctx.size, ctx.size), ctx.calibration() if int8 else None,
                      batch_size=ctx.batch, verify=False)
        r = rt.runner(str(f), threads=ctx.threads)
        return (lambda: r(ctx.x)), r(ctx.x)
    return build


@dataclass(frozen=True)
class PathSpec:
    """One benchmark path: its key (``--paths``), label, group (``ours``, ``mobile`` or
    ``reference``), precision, the modules it needs (``needs``, with what to install), and how to
    build it (``build(ctx) -> (zero-argument callable, its output)``)."""

    key: str
    label: str
    group: str
    build: Callable[[PathContext], tuple]
    int8: bool = False
    needs: tuple[str, ...] = ()
    install: str = ""


_ORT = ("onnxruntime", "onnx")
_ORT_INSTALL = "pip install onnx onnxruntime"
PATHS: tuple[PathSpec, ...] = (
    PathSpec("eager", "ours eager", "ours", lambda c: _eager(c.model, c.x)),
    PathSpec("fused_cl", "ours fused + channels_last", "ours", lambda c: _channels_last(_fused(c), c)),
    PathSpec("fused_onednn", "ours fused + oneDNN prepacked", "ours", _build_fused_onednn),
    PathSpec("compile", "ours torch.compile", "ours", _build_compile),
    PathSpec("ort_fp32", "ours ONNX Runtime fp32", "ours",
             lambda c: _ort_fn(_ort_session(str(_fp32_onnx(c)), c.threads), c.x), needs=_ORT, install=_ORT_INSTALL),
    PathSpec("ort_int8", "ours ONNX Runtime INT8", "ours", _build_ort_int8, int8=True, needs=_ORT,
             install=_ORT_INSTALL),
    PathSpec("et_xnnpack_fp32", "ours ExecuTorch XNNPACK fp32", "mobile", _mobile("executorch", False),
             needs=("executorch",), install="pip install 'mobilenets[mobile]'"),
    PathSpec("et_xnnpack_int8", "ours ExecuTorch XNNPACK INT8", "mobile", _mobile("executorch", True), int8=True,
             needs=("executorch",), install="pip install 'mobilenets[mobile]'"),
    PathSpec("litert_fp32", "ours LiteRT fp32", "mobile", _mobile("litert", False),
             needs=("litert_torch",), install="pip install 'mobilenets[mobile]'"),
    PathSpec("litert_int8", "ours LiteRT INT8", "mobile", _mobile("litert", True), int8=True,
             needs=("litert_torch",), install="pip install 'mobilenets[mobile]'"),
    PathSpec("timm_eager", "timm eager", "reference", lambda c: _eager(c.timm_model, c.x)),
    PathSpec("timm_ort", "timm -> ONNX Runtime fp32", "reference", _build_timm_ort, needs=_ORT,
             install=_ORT_INSTALL),
    PathSpec("tv_eager", "torchvision eager", "reference", lambda c: _eager(c.tv_model, c.x)),
)
SPECS = {p.key: p for p in PATHS}
OURS = tuple(p.key for p in PATHS if p.group == "ours")
#: on-device runtimes (``pip install 'mobilenets[mobile]'``): ExecuTorch with XNNPACK, LiteRT
MOBILE = tuple(p.key for p in PATHS if p.group == "mobile")
REFERENCE = tuple(p.key for p in PATHS if p.group == "reference")
ALL_PATHS = tuple(SPECS)
#: the paths whose output is a quantized model's (their difference to fp32 is reported, not checked)
INT8_PATHS = tuple(p.key for p in PATHS if p.int8)
LABELS = {p.key: p.label for p in PATHS}
FP32_OURS = tuple(p.key for p in PATHS if p.group != "reference" and not p.int8)


def build_paths(name: str, batch: int, size: int = 224, threads: int = 2,
                paths: Sequence[str] = ALL_PATHS, calib: str = "fake", calib_count: int = 32,
                model: Optional[nn.Module] = None, seed: int = 0,
                log: Callable[[str], None] = lambda s: None) -> Built:
    """Build every requested path (rows of :data:`PATHS`) for ``name`` on a
    ``(batch, C, size, size)`` input.

    ``model``: use this model (e.g. trained weights) instead of one carrying the reference's
    random weights; the references then keep their own random weights and are timed only.
    """
    from ..factory import create_model

    unknown = [p for p in paths if p not in SPECS]
    if unknown:
        raise ValueError(f"unknown benchmark path(s) {unknown}; expected any of {list(ALL_PATHS)}")
    built = Built(temp_dir=tempfile.TemporaryDirectory(prefix="mobilenets-bench-"))
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
    x = torch.randn(batch, model_info(model).in_chans, size, size, generator=torch.Generator().manual_seed(seed + batch))
    ctx = PathContext(model, x, size, batch, threads, calib, calib_count, Path(built.temp_dir.name),
                      timm_model, tv_model)
    for key in [k for k in ALL_PATHS if k in paths]:  # the table's order: later paths reuse earlier files
        spec = SPECS[key]
        missing = [m for m in spec.needs if not _have(m)]
        if missing and key not in built.notes:
            built.notes[key] = f"{' / '.join(missing)} not installed ({spec.install})"
        if key in built.notes:
            continue
        t0 = time.perf_counter()
        try:
            with _quiet():
                fn, out = spec.build(ctx)
        except Exception as e:  # noqa: BLE001 - a path that cannot be built is reported, not fatal
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            built.notes[key] = f"failed: {type(e).__name__}: {msg[:160]}"
            log(f"  {key}: {built.notes[key]}")
            continue
        built.fns[key], built.outputs[key] = fn, out
        built.build_s[key] = time.perf_counter() - t0

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


