"""The one export driver (:func:`export_mobile`) and the :class:`Runtime` protocol every runtime
implements: ONNX Runtime (:mod:`.onnx_export`), ExecuTorch-XNNPACK (:mod:`.executorch_export`),
LiteRT (:mod:`.litert_export`); another runtime (CoreML, OpenVINO) is one more file.

The driver fuses the model (BatchNorms folded), swaps its modules for the runtime's export forms
(:mod:`.export_swaps`), and, for INT8, quantizes with the runtime's own quantizer (the on-device
runtimes: PT2E, ``prepare_pt2e`` -> calibration -> ``convert_pt2e``, per-channel symmetric int8
weights, static int8 activations; ONNX Runtime: its static QDQ quantizer on the fp32 file). The
runtime lowers the net, the file is written atomically with the model's
:class:`~mobilenets.models.info.ModelInfo` where the format holds metadata, then loaded and RUN in
its runtime and checked against eager: fp32 within ``atol_rel`` relative (every output); INT8 by
its top-1 agreement with fp32 on the calibration images, and by its distance to the runtime's
INT8 reference (PT2E: the quantized model simulated in float by PyTorch).

Why one module: the driver and the :class:`Runtime` protocol are one contract (each step the
driver runs is a member a runtime supplies, and the helpers are what both sides call), so a
runtime's author reads one file to learn what to implement.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from ..models.info import model_info
from ..progress import progress_bar
from .calibration import NO_CALIBRATION, Calibration, _as_batches, calibration_batches
from .export_swaps import swap_for_export
from .fuse import fuse

#: calibration images used when ``calib`` is a source name (``"digits"``, ``"fake"``, a folder)
DEFAULT_CALIB_COUNT = 128
#: images the INT8 agreement at export is measured on (the first calibration images)
AGREEMENT_IMAGES = 64


class LoweringError(ValueError):
    """A model (or part of it) that the runtime cannot take: names the op, where it is in the
    model, why, and the fix."""


@dataclass(frozen=True)
class MobileExport(os.PathLike):
    """What an on-device export wrote and how it was checked. Path-like (``open(result)``,
    ``Path(result)``); ``str(result)`` is the path.

    Attributes:
        path: the file. runtime: ``"onnx"``, ``"executorch"`` or ``"litert"``. precision: ``"fp32"`` /
            ``"int8"``.
        input_shape: the fixed input ``(N, C, H, W)``.
        max_rel_diff: fp32: max |runtime - eager| / max |eager| on a random input; INT8: the
            same against the PT2E reference graph (``None``: not verified).
        agreement: INT8: top-1 agreement of the file with fp32 eager (a QAT model: with the QAT
            model, ``agreement_with``) on the first calibration images (``None`` for fp32 or
            unverified).
        agreement_images: how many images ``agreement`` is measured on.
        outside: ops not taken by the accelerated backend (XNNPACK delegate / LiteRT builtins),
            ``{"op @ module": count}``; empty when the model lowered fully.
        ops: the operator counts of the file (LiteRT) or of the lowered graph (ExecuTorch).
        calib_method: INT8 post-training quantization: the ``calib_method`` its ranges came from
            (``auto``: the one it kept and each candidate's output error; None otherwise).
    """

    path: Path
    runtime: str
    precision: str
    input_shape: tuple
    max_rel_diff: Optional[float] = None
    agreement: Optional[float] = None
    agreement_images: int = 0
    outside: dict = field(default_factory=dict)
    ops: dict = field(default_factory=dict)
    notes: tuple = ()  # the runtime's ("checked in <label>", fully-lowered phrase, INT8 reference) for summary()
    agreement_with: str = "fp32"  # what ``agreement`` compares with: fp32, or "the QAT model"
    calib_method: Optional[str] = None  # INT8 PTQ: how the activation ranges were chosen (``auto``: which it kept)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def fully_lowered(self) -> bool:
        return not self.outside

    def summary(self) -> str:
        """One line: what was checked, in the runtime."""
        checked, complete, reference = self.notes or (f"checked in {self.runtime}", "fully lowered",
                                                      "the INT8 reference")
        parts = []
        if self.max_rel_diff is not None:
            vs = reference if self.precision == "int8" else "eager"
            parts.append(f"max diff {self.max_rel_diff:.1e} relative vs {vs}")
        if self.agreement is not None:
            parts.append(f"top-1 agreement with {self.agreement_with} {100 * self.agreement:.1f}% on {self.agreement_images} "
                         f"calibration images")
        parts.append(complete if self.fully_lowered else f"{sum(self.outside.values())} op(s) outside: "
                     + ", ".join(self.outside))
        return f"{checked}: " + "; ".join(parts)


def check_mobile_args(path: Union[str, os.PathLike], input_size: Sequence[int], suffix: str,
                      batch_size: int, min_size: int = 32) -> tuple[Path, tuple[int, int]]:
    """``(path, (H, W))`` after ``ValueError`` for a bad size, batch or file suffix. ``min_size``:
    32 for a model (five stride-2 stages); a part of one (a block on a feature map) may be smaller."""
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    if len(input_size) != 2 or min(int(s) for s in input_size) < min_size:
        raise ValueError(f"input_size must be (H, W) with H, W >= {min_size}, got {tuple(input_size)}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise ValueError(f"output file must end in {suffix}, got {path.name!r}")
    return path, (int(input_size[0]), int(input_size[1]))


def check_int8_args(calib: Any, int8: Optional[bool]) -> bool:
    """Whether to quantize: ``int8`` defaults to "calibration data given"; INT8 without
    calibration data (or calibration data for an fp32 export) is a ``ValueError``."""
    int8 = calib is not None if int8 is None else bool(int8)
    if int8 and calib is None:
        raise ValueError(NO_CALIBRATION.replace("calibration=", "calib="))
    if not int8 and calib is not None:
        raise ValueError("calib is for INT8 exports: pass int8=True (or drop calib for fp32)")
    return int8


class QATExport:
    """Marks a model quantization-aware trained for one runtime (its ``runtime``, ``quantizer``,
    ``input_size``, ``in_chans`` and ``convert()``, the quantized reference graph):
    :func:`export_mobile` lowers its converted graph instead of quantizing
    (:class:`~mobilenets.deploy.qat.pt2e.MobileQAT`)."""


class MainOutput(nn.Module):
    """A segmenter as a mobile file runs it: its ``"out"`` logits as one tensor (torchvision's
    segmenters return a dict; the aux head only trains, so it is dropped)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        if getattr(model, "aux_classifier", None) is not None:
            model.aux_classifier = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def prepare(model: nn.Module, int8: bool = False, target: Optional[str] = None, main_output: bool = True,
            fused: bool = True) -> tuple[nn.Module, nn.Module, int]:
    """``(fused eager net, its export form, input channels)``; the model is not modified.

    ``target``: the export forms (:func:`~.export_swaps.swap_for_export`; default ``"mobile"``,
    ``"mobile_int8"`` with ``int8``). ``main_output``: a segmenter (its
    :func:`~mobilenets.models.info.model_info` task) exports its ``"out"`` logits as one tensor
    (:class:`MainOutput`: what a mobile runtime returns); else every output, in order.
    ``fused=False``: BatchNorms kept (a copy in eval mode)."""
    import copy

    info = model_info(model)
    net = fuse(model) if fused else copy.deepcopy(model).eval()
    if main_output and info.task == "segmentation":
        net = MainOutput(net).eval()
    form = swap_for_export(net, target=target or ("mobile_int8" if int8 else "mobile"))
    return net, form, info.in_chans


def resolve_calibration(calib: Union[str, os.PathLike, Calibration], input_size: tuple[int, int],
                        in_chans: int, count: int = DEFAULT_CALIB_COUNT) -> torch.Tensor:
    """Calibration images ``(N, C, H, W)``: a source name (``"digits"``, ``"fake"``, a folder)
    goes through :func:`calibration_batches`; tensors / batches are checked for shape."""
    if isinstance(calib, (str, os.PathLike)):
        return calibration_batches(calib, count=count, input_size=input_size, in_chans=in_chans)
    return torch.from_numpy(np.concatenate(_as_batches(calib, (in_chans, *input_size), None)))


def pt2e_observe(net: nn.Module, example: torch.Tensor, images: torch.Tensor, quantizer: Any,
                 captured: Optional[torch.fx.GraphModule] = None) -> torch.fx.GraphModule:
    """PT2E static quantization's first half: export ``net``, insert the quantizer's observers and
    run the calibration ``images`` through them (in chunks of the export's batch size).
    Activations read only through a saturating op are observed within what it keeps
    (:func:`.saturation.within_saturation`). ``captured``: ``export_program(net, example).module()``
    where the caller observes the same net more than once; a copy of it is prepared, so one capture
    serves every quantizer."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from .saturation import within_saturation

    gm = export_program(net, example).module() if captured is None else copy.deepcopy(captured)
    observed = prepare_pt2e(gm, quantizer)
    b = example.shape[0]
    n = (len(images) // b) * b
    if n == 0:
        raise ValueError(f"the export's batch size is {b}; give at least that many calibration images "
                         f"(got {len(images)})")
    with torch.no_grad(), within_saturation(observed):
        for i in range(0, n, b):
            observed(images[i:i + b])
    return observed


def pt2e_convert(observed: torch.fx.GraphModule, fold_quantize: bool = True) -> nn.Module:
    """A calibrated graph (:func:`pt2e_observe`) converted to the quantize / dequantize graph
    (``fold_quantize``: weights stored as int8 constants; litert-torch wants them as float +
    quantize ops, ``False``)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    converted = convert_pt2e(observed, fold_quantize=fold_quantize)
    for mod in converted.modules():  # an exported module refuses .eval(); captured in eval mode already
        mod.training = False
    return converted


def simulation_graph(net: nn.Module, example: torch.Tensor, quantizer) -> Optional[torch.fx.GraphModule]:
    """``net`` captured with a free batch dimension and prepared with ``quantizer`` (observers
    inserted, not calibrated): where ``auto`` runs its trials many images per forward
    (:func:`.observers.choose_calibration`, which checks that its observers are those of the
    fixed-batch graph); None where the network cannot be captured so (a form that needs its
    batch fixed), and the trials then run at the export's batch."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    try:
        ep = export_program(net, example[:1].expand(2, *example.shape[1:]).contiguous(), free_batch=True)
    except LoweringError:  # the fixed-batch graph serves, only slower
        return None
    return prepare_pt2e(ep.module(), quantizer)


def pt2e_quantize(net: nn.Module, example: torch.Tensor, images: torch.Tensor, quantizer: Any,
                  fold_quantize: bool = True) -> nn.Module:
    """PT2E static quantization of ``net``: :func:`pt2e_observe`, then :func:`pt2e_convert`."""
    return pt2e_convert(pt2e_observe(net, example, images, quantizer), fold_quantize)


def export_program(net: nn.Module, example: torch.Tensor, free_batch: bool = False):
    """``torch.export.export`` with a :class:`LoweringError` naming what failed. ``free_batch``:
    the batch dimension left symbolic (1 to 4096; ``example`` then needs a batch of at least 2,
    which torch.export would otherwise specialise)."""
    dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},) if free_batch else None
    try:
        return torch.export.export(net, (example,), dynamic_shapes=dynamic)
    except Exception as e:  # noqa: BLE001 - torch.export raises many classes (Unsupported, UserError...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LoweringError(f"torch.export cannot capture {type(net).__name__} ({type(e).__name__}: "
                            f"{first[:300]}); the fix is an export form of the module that fails in "
                            f"mobilenets/deploy/export_swaps.py (MOBILE_FORMS)") from e


def drop_noop_expands(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """``gm`` (captured at fixed shapes) without the ``expand`` nodes that expand nothing: a
    dynamic-batch graph (quantization-aware training) broadcasts over its batch with ``expand``,
    which at a phone file's batch 1 is a copy that no accelerated backend takes. In place."""
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target in (torch.ops.aten.expand.default,
                                                          torch.ops.aten.expand_copy.default):
            src, val = node.args[0], node.meta.get("val")
            src_val = getattr(src, "meta", {}).get("val")
            if val is not None and src_val is not None and tuple(val.shape) == tuple(src_val.shape):
                node.replace_all_uses_with(src)
                gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    return gm


def chunks(images: torch.Tensor, batch: int) -> list[torch.Tensor]:
    """``images`` cut into chunks of exactly ``batch`` (a fixed-shape program's batch size)."""
    if len(images) % batch:
        raise ValueError(f"the file's batch size is fixed to {batch}; got {len(images)} images")
    return [images[i:i + batch] for i in range(0, len(images), batch)]


def check_shape(x: torch.Tensor, shape: tuple, path: Union[str, Path], what: str) -> None:
    """``ValueError`` when ``x`` does not have the fixed input shape of ``path``."""
    if tuple(x.shape) != tuple(shape):
        exp = "x".join(str(s) for s in shape)
        raise ValueError(f"{path}: this {what} file was exported for input {exp} (a fixed shape); got "
                         f"{'x'.join(str(s) for s in x.shape)}: feed images of that size or re-export with "
                         f"--input-size {shape[2]} {shape[3]} set to yours")


def rel_diff(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-12))


def outputs(out: Any) -> list[torch.Tensor]:
    """A model's or a runner's outputs as a list of tensors, in order (a dict's values, a list or
    tuple, one tensor)."""
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [torch.as_tensor(o) for o in out]
    return [torch.as_tensor(out)]


def verify_export(run: Callable[[torch.Tensor], torch.Tensor], batch: int, fp32_net: nn.Module,
                  x: torch.Tensor, ref: torch.Tensor, atol_rel: float, what: str, int8: bool,
                  images: Optional[torch.Tensor]) -> tuple[float, Optional[float], int]:
    """Run the written file: ``(max rel diff, INT8 agreement with fp32 or None, images)``.

    fp32: every output of ``run(x)`` against ``ref`` (eager), ``RuntimeError`` above ``atol_rel``.
    INT8: against ``ref`` (the runtime's INT8 reference), non-finite outputs are an error; the
    agreement with ``fp32_net`` (a single 2-D output: logits) is measured on the first
    calibration ``images``.
    """
    from .ort import agreement

    outs, refs = outputs(run(x)), outputs(ref)
    if len(outs) != len(refs):
        raise RuntimeError(f"{what} gives {len(outs)} output(s), eager {len(refs)}")
    err = 0.0
    for out, r in zip(outs, refs):
        if tuple(out.shape) != tuple(r.shape):
            raise RuntimeError(f"{what} output has shape {tuple(out.shape)}, eager {tuple(r.shape)}")
        if not torch.isfinite(out).all():
            raise RuntimeError(f"{what} produced non-finite outputs")
        err = max(err, rel_diff(out, r))
    if not int8:
        if err > atol_rel:
            raise RuntimeError(f"{what} output differs from eager: relative max diff {err:.2e} > {atol_rel:.0e}")
        return err, None, 0
    if len(refs) != 1 or refs[0].ndim != 2 or images is None:
        return err, None, 0
    imgs = images[:max(batch, (min(len(images), AGREEMENT_IMAGES) // batch) * batch)]
    with torch.no_grad():
        fp = torch.cat([fp32_net(c) for c in chunks(imgs, batch)])
    q = torch.cat([outputs(run(c))[0] for c in chunks(imgs, batch)])
    return err, agreement(q, fp), len(imgs)


# --- the one on-device export driver ----------------------------------------------------------
@dataclass
class Lowered:
    """What a runtime's :meth:`Runtime.lower` produced: ``write(path)`` writes the file;
    ``ops`` the operator counts; ``outside`` the ops its accelerated backend does not take
    (``{"op @ module": count}``), with ``lines`` describing them for the error."""

    write: Callable[[str], None]
    ops: dict
    outside: dict = field(default_factory=dict)
    lines: list = field(default_factory=list)


class Runtime:
    """One runtime for :func:`export_mobile`: the driver runs the steps every runtime shares
    (check the arguments, fuse and swap in the export forms, calibrate and quantize, take the
    reference output, lower, refuse ops outside the accelerated backend, write atomically with
    the model's record, run the written file and compare); a runtime supplies only these members.

    ``name`` (:attr:`MobileExport.runtime`), ``label`` (for messages), ``suffix`` (of its files),
    ``backend`` (what "outside" means, for the error), ``complete`` (the summary's phrase for a
    file that lowered fully), ``int8_reference`` (what an INT8 file is compared with),
    ``forms`` (the fp32 export forms: a target of :func:`~.export_swaps.swap_for_export`),
    ``int8_forms`` (the INT8 files' forms; None: ``forms``; :meth:`forms_for`), ``main_output`` (a
    segmenter exports its ``"out"`` logits only: a mobile file has one output), and the methods
    below. An instance may carry options (ONNX Runtime's opset and dynamic batch)."""

    name: str = ""
    label: str = ""
    suffix: str = ""
    backend: str = ""
    complete: str = "fully lowered"
    int8_reference: str = "the PT2E reference"
    int8_forms: Optional[str] = None
    forms: str = "mobile"
    main_output: bool = True

    def forms_for(self, int8: bool) -> str:
        """The export-form target of this runtime's fp32 or INT8 files."""
        return (self.int8_forms or self.forms) if int8 else self.forms

    @property
    def checked(self) -> str:
        """How :meth:`MobileExport.summary` opens: ``"checked in <label>"``."""
        return f"checked in {self.label}"

    def require(self) -> None:
        """:class:`~mobilenets.extras.MissingDependencyError` when its packages are missing
        (``ValueError`` for options it cannot take)."""
        raise NotImplementedError

    #: PT2E's ``convert_pt2e(fold_quantize=...)``: weights stored as int8 constants (litert-torch
    #: wants them as float + quantize ops: False)
    fold_quantize: bool = True

    def pt2e_quantizer(self, qat: bool = False):
        """The runtime's own PT2E quantizer (``qat``: its quantization-aware-training
        configuration, fake quantization that gradients pass through); None for a runtime that
        quantizes otherwise (ONNX Runtime: its QDQ quantizer on the fp32 file)."""
        return None

    def int8_options(self, quantizer) -> dict:
        """Options for :meth:`lower` of a net quantized with ``quantizer``."""
        return {}

    #: ``calib_method`` values :meth:`quantize` takes, the default first (:mod:`.observers`)
    calib_methods: tuple = ("auto", "mse", "minmax", "percentile", "average")

    def quantize(self, net: nn.Module, x: torch.Tensor, images: torch.Tensor,
                 float_layers: Sequence[str] = (), calib_method: Optional[str] = None) -> tuple[nn.Module, dict]:
        """``(the INT8 reference net, options for lower)``; by default PT2E static quantization
        with :meth:`pt2e_quantizer`, calibrated on ``images``, each activation's range chosen by
        ``calib_method`` (:data:`calib_methods`; None: the first; ``auto``: the candidate whose
        graph is closest to ``net`` on ``images``, then groups of activations switched to another
        method where that brings it closer, :func:`.observers.choose_calibration`; the choices are
        the returned graph's ``meta["calib_method"]`` and ``meta["calib_groups"]``); the modules ``float_layers``
        (module paths, :func:`~.sensitivity.quantizable_layers`) stay float."""
        from .observers import AUTO_CANDIDATES, GROUP_CANDIDATES, choose_calibration, with_calib_method

        if self.pt2e_quantizer() is None:
            raise NotImplementedError(f"{type(self).__name__} has neither a PT2E quantizer nor its own quantize")
        quantizers = {}

        def quantizer(method: str):
            quantizers[method] = with_calib_method(self.pt2e_quantizer(), method)
            return self.keep_float(quantizers[method], net, float_layers)

        def observed(method: str, captured=None) -> torch.fx.GraphModule:
            return pt2e_observe(net, x, images, quantizer(method), captured)

        method = calib_method or self.calib_methods[0]
        if method == "auto":
            captured = export_program(net, x).module()
            graphs = {m: observed(m, captured) for m in dict.fromkeys(AUTO_CANDIDATES + GROUP_CANDIDATES)}
            sim = simulation_graph(net, x, quantizer(AUTO_CANDIDATES[0]))
            r = choose_calibration(net, images, x.shape[0], graphs, simulator=sim,
                                   progress=lambda total: progress_bar(total, "auto: activation ranges per group"))
            chosen = r["base"]
            q = pt2e_convert(r["graph"], self.fold_quantize)
            switched = "".join(f"; {g} {m}" for g, m in r["groups"].items())
            q.meta["calib_method"] = (f"auto: {chosen}{switched} (output error " + ", ".join(
                f"{m} {e:.2g}" for m, e in r["errors"].items()) + (f"; mixed {r['error']:.2g}" if switched else "")
                + ")")
            q.meta["calib_groups"] = dict(r["groups"])
        else:
            q, chosen = pt2e_convert(observed(method), self.fold_quantize), method
            q.meta["calib_method"] = method
        return q, self.int8_options(quantizers[chosen])

    #: INT8 files keep the export forms that declare ``int8_float`` (token-sized work) float
    #: (:func:`~.export_swaps.float_modules`)
    float_forms: bool = False

    def keep_float(self, quantizer, net: nn.Module, float_layers: Sequence[str] = ()):
        """``quantizer`` restricted so that ``float_layers`` (module paths of ``net``, checked) and,
        where :attr:`float_forms`, the forms declaring ``int8_float`` stay float."""
        from .export_swaps import float_modules
        from .pt2e_filter import LayerFilter, quantizable_layers

        if float_layers:
            unknown = sorted(set(float_layers) - set(quantizable_layers(net)))
            if unknown:
                raise ValueError(f"float_layers: no quantizable layer {unknown[0]!r}; expected module paths such as "
                                 f"{quantizable_layers(net)[:3]}")
        skip = [*float_layers, *(float_modules(net) if self.float_forms else ())]
        return LayerFilter(quantizer, skip=skip).quantizer if skip else quantizer

    def lower(self, net: nn.Module, x: torch.Tensor, options: dict, model_name: str, info=None) -> Lowered:
        """The program for ``net`` at input ``x`` (a :class:`LoweringError` when it cannot);
        ``info``: the model's :class:`~mobilenets.models.info.ModelInfo`, for a format that
        records it in the program itself (ExecuTorch) rather than in :meth:`write_info`."""
        raise NotImplementedError

    def runner(self, path: str, threads: Optional[int] = None) -> Callable[[torch.Tensor], Any]:
        """Something that runs the written file on a batch (``threads``: None for the runtime's
        own verification setting); a tensor, or a list of them for a file with several outputs."""
        raise NotImplementedError

    def write_info(self, path: str, info) -> None:
        """Record the model's :class:`~mobilenets.models.info.ModelInfo` in the written file (a
        format without metadata: nothing)."""


def export_mobile(runtime: Runtime, model: nn.Module, path: Union[str, os.PathLike],
                  input_size: Sequence[int] = (224, 224), calib=None, *, int8: Optional[bool] = None,
                  batch_size: int = 1, calib_count: int = DEFAULT_CALIB_COUNT, verify: bool = True,
                  atol_rel: float = 1e-4, allow_fallback: bool = False, fused: bool = True,
                  min_size: int = 32, float_layers: Sequence[str] = (),
                  calib_method: Optional[str] = None) -> MobileExport:
    """Export ``model`` for ``runtime`` (any :class:`Runtime`: ONNX Runtime, ExecuTorch, LiteRT;
    :func:`~mobilenets.deploy.export_executorch` documents the arguments), verified by running the
    written file in the runtime. ``fused=False`` keeps the BatchNorms. ``min_size``: the smallest
    input side accepted (1 for a block on a feature map, as the search's latency tables export).
    ``float_layers``: INT8 with these layers (module paths) kept float (mixed precision,
    :func:`~mobilenets.deploy.sensitivity.layer_sensitivity` ranks them). ``calib_method``: how
    each activation's range is chosen from the calibration images (``runtime.calib_methods``; None:
    the runtime's default; :mod:`mobilenets.deploy.observers`).

    ``model`` may be a :class:`~mobilenets.deploy.qat.pt2e.MobileQAT` (quantization-aware trained
    for this runtime): its converted graph is the INT8 net (no calibration: ``calib`` only feeds
    the agreement check, which is then with the QAT model itself)."""
    from ..weights.io import atomic_write

    path, size = check_mobile_args(path, input_size, runtime.suffix, batch_size, min_size)
    qat = model if isinstance(model, QATExport) else None
    int8 = True if qat is not None else check_int8_args(calib, int8)
    runtime.require()
    if calib_method is not None:
        if not int8 or qat is not None:
            raise ValueError("calib_method is for INT8 post-training quantization" + (
                " (a QAT model's ranges are trained)" if qat is not None else ": pass calibration images"))
        if calib_method not in runtime.calib_methods:
            raise ValueError(f"calib_method: {runtime.label} takes {', '.join(runtime.calib_methods)}; "
                             f"got {calib_method!r}")
    if qat is not None:
        if qat.runtime.name != runtime.name:
            raise ValueError(f"this model was quantization-aware trained for {qat.runtime.label}; exporting it to "
                             f"{runtime.label} would use another quantizer: export it for {qat.runtime.label}, or "
                             f"train QAT for {runtime.label}")
        if tuple(size) != qat.input_size:
            raise ValueError(f"this QAT model was captured at input {qat.input_size[0]}x{qat.input_size[1]}; "
                             f"got input_size {size[0]}x{size[1]}")
        fused, net, in_chans = qat.eval(), qat.convert(), qat.in_chans
        net = drop_noop_expands(export_program(net, torch.randn(batch_size, in_chans, *size)).module())
    else:
        fused, net, in_chans = prepare(model, target=runtime.forms_for(int8), main_output=runtime.main_output,
                                       fused=fused)
    x = torch.randn(batch_size, in_chans, *size, generator=torch.Generator().manual_seed(0))
    images, options = None, {}
    if qat is not None:
        images = resolve_calibration(calib, size, in_chans, calib_count) if calib is not None else None
        options = runtime.int8_options(qat.quantizer)
    elif int8:
        images = resolve_calibration(calib, size, in_chans, calib_count)
        net, options = runtime.quantize(net, x, images, float_layers, calib_method)
    with torch.no_grad():
        ref = (net if int8 else fused)(x)  # INT8: the PT2E reference graph (quantization simulated)
    info = model_info(model).replace(input_size=(in_chans, *size))
    lowered = runtime.lower(net, x, options, type(model).__name__, info=info)
    if lowered.outside and not allow_fallback:
        raise LoweringError(
            f"{type(model).__name__}: {sum(lowered.outside.values())} op(s) outside {runtime.backend}:\n  "
            + "\n  ".join(lowered.lines or [f"{k}: {v}" for k, v in lowered.outside.items()])
            + "\nFix: an export form of that module computing the same function from ops the runtime takes "
            "(mobilenets/deploy/export_swaps.py, MOBILE_FORMS), or allow_fallback=True to accept them")
    result: dict = {}

    def write(tmp: str) -> None:
        lowered.write(tmp)
        runtime.write_info(tmp, info)
        if verify:
            result["check"] = verify_export(runtime.runner(tmp), batch_size, fused, x, ref, atol_rel,
                                            runtime.label, int8, images)

    atomic_write(path, write)
    err, agree, n_agree = result.get("check", (None, None, 0))
    return MobileExport(Path(path), runtime.name, "int8" if int8 else "fp32", tuple(x.shape), err, agree, n_agree,
                        lowered.outside, lowered.ops, (runtime.checked, runtime.complete, runtime.int8_reference),
                        "fp32" if qat is None else "the QAT model",
                        getattr(net, "meta", {}).get("calib_method") if int8 and qat is None else None)
