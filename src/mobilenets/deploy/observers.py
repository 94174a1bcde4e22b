"""How INT8 post-training quantization picks each activation's range from the calibration images
(``--calib-method``), for the PT2E runtimes (ExecuTorch, LiteRT):

* ``auto`` (their default), in two steps (:func:`choose_calibration`). First ``mse`` and
  ``average`` (:data:`AUTO_CANDIDATES`) are each calibrated on the images, and the one whose INT8
  graph's outputs are closest to fp32 on those images is the base (:func:`output_error`: the
  per-image relative squared error). Which wins depends on the network: measured, ``mse`` on
  MobileNetV4 (relative error 0.0008 vs 0.03), ``average`` on a MobileNetV3-Small whose
  hard-swish / SE tail one calibration image drives ~360x past the median image (ExecuTorch:
  0.07 vs 0.14). Then each group of activations with one role (:func:`activation_groups`:
  ``"conv2d -> add, mul"``, a conv output that an add and a mul read, is LiteRT's hard-swish
  input) tries the other methods of :data:`GROUP_CANDIDATES` and keeps one that brings the
  outputs closer. Measured on that MobileNetV3-Small (benchmarks/INT8.md): its logits and
  SE squeeze outputs take ``mse`` over the ``average`` base in ExecuTorch, its hard-swish inputs
  ``minmax`` over the ``mse`` base in LiteRT, which neither method alone gets to.
* ``mse``: PT2E's ``HistogramObserver``: a histogram of every value seen, then the
  range whose 8-bit rounding and clipping give the least squared error (a search over the
  histogram's bins).
* ``minmax``: the smallest and largest value seen (nothing clipped; one outlier widens the step
  for every value).
* ``percentile``: the same histogram, cut at the 0.01 and 99.99 percentiles (TensorRT's and ONNX
  Runtime's percentile calibration): the extreme 0.01 % clip, the rest get a finer step.
* ``average``: the running average of each calibration batch's min and max (PyTorch's
  ``MovingAverageMinMaxObserver``, :data:`AVERAGING` per batch; batches are the export's, one image
  for a phone file): a few extreme images move the range by 1 % each. Measured: a MobileNetV3-Large
  trained on digit-clutter has images that drive its SE layers' activations ~250x past the others';
  every method that covers them (``mse``, ``minmax``, ``percentile``: those values are a whole
  image's worth of a 1x1 map, too many for a percentile to clip) leaves the rest of its SE signal
  at zero (top-1 at chance), this one keeps it (benchmarks/INT8.md).

Whatever the method, an activation whose every use saturates (the SE gate's input: hard-sigmoid
is flat outside [-3, 3]; a convolution's output that only ReLU6 reads) is observed clipped to the
values those uses tell apart (:func:`.saturation.within_saturation`): that clipping changes no output, so the
range is spent where it matters, and a few images that drive the input far past the flat ends
no longer widen it.

Weights are unchanged (per-channel min / max, symmetric). ONNX Runtime has its own set
(``minmax``, ``entropy``, ``percentile``: :func:`mobilenets.deploy.quantize_onnx`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from .saturation import aten_ops, clipped_observers, observer_calls, saturation_ranges, within_saturation

#: the observer choices of :func:`with_calib_method`
PT2E_CALIB_METHODS = ("mse", "minmax", "percentile", "average")
#: what ``auto`` calibrates with, keeping the closest to fp32 (:func:`choose_calibration`)
AUTO_CANDIDATES = ("mse", "average")
#: ``auto``'s second step: the methods each group of activations (:func:`activation_groups`) may switch to
GROUP_CANDIDATES = ("mse", "average", "minmax")
#: ``auto``'s second step compares on at most this many of the calibration images (spread evenly)
REFINE_IMAGES = 32
#: ``auto``'s second step keeps a group's switch only when it cuts the output error by more than this fraction
REFINE_MARGIN = 0.01
#: images per forward of ``auto``'s simulated graph where it was captured with a free batch
SIM_BATCH = 32
#: the percentile ``percentile`` keeps (and 100 minus it at the low end)
PERCENTILE = 99.99
#: ``average``: how far each calibration batch moves the range
AVERAGING = 0.01


def _histogram_observer():
    from torchao.quantization.pt2e.observer import HistogramObserver

    return HistogramObserver


def percentile_observer_class():
    """A ``HistogramObserver`` whose range is the histogram's :data:`PERCENTILE` bounds instead of
    its squared-error search (built on first use: torchao is imported lazily)."""
    global _PercentileObserver
    if _PercentileObserver is None:
        base = _histogram_observer()

        class PercentileObserver(base):
            def __init__(self, *args, percentile: float = PERCENTILE, **kwargs):
                super().__init__(*args, **kwargs)
                self.percentile = float(percentile)

            def _non_linear_param_search(self):
                return percentile_bounds(self.histogram, self.min_val, self.max_val, self.percentile)

        _PercentileObserver = PercentileObserver
    return _PercentileObserver


_PercentileObserver = None


def percentile_bounds(histogram: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                      percentile: float = PERCENTILE) -> tuple[torch.Tensor, torch.Tensor]:
    """``(min, max)``: the ``100 - percentile`` and ``percentile`` percentiles of the values a
    histogram of equal bins over ``[lo, hi]`` counts (bin edges; the range always keeps 0, which
    the quantized zero must represent exactly)."""
    counts = histogram.double()
    total = float(counts.sum())
    if total <= 0 or float(hi) <= float(lo):
        return lo, hi
    cdf = torch.cumsum(counts, 0) / total
    q = (100.0 - float(percentile)) / 100.0
    width = (hi - lo) / len(counts)
    first = int(torch.searchsorted(cdf, torch.tensor(q, dtype=cdf.dtype)))
    last = int(torch.searchsorted(cdf, torch.tensor(1.0 - q, dtype=cdf.dtype)))
    new_lo = lo + width * first
    new_hi = lo + width * min(last + 1, len(counts))
    return torch.minimum(new_lo, torch.zeros_like(new_lo)), torch.maximum(new_hi, torch.zeros_like(new_hi))


def with_calib_method(quantizer, method: str):
    """``quantizer`` (a runtime's static PT2E quantizer) with its activation observers set to
    ``method`` (:data:`PT2E_CALIB_METHODS`); ``ValueError`` for another name."""
    from torchao.quantization.pt2e.observer import MinMaxObserver, MovingAverageMinMaxObserver

    if method not in PT2E_CALIB_METHODS:
        raise ValueError(f"calib_method: expected one of {', '.join(PT2E_CALIB_METHODS)} for ExecuTorch / LiteRT, "
                         f"got {method!r}")
    if method == "mse":
        return quantizer
    c = quantizer.global_config

    def swap(spec):
        p = getattr(getattr(spec, "observer_or_fake_quant_ctr", None), "p", None)
        if p is None or p.func is not _histogram_observer():
            raise ValueError(f"calib_method {method!r} needs static activation quantization (a histogram observer); "
                             f"this quantizer observes with {getattr(p, 'func', spec)}")
        if method == "average":
            ctor = MovingAverageMinMaxObserver.with_args(**p.keywords, averaging_constant=AVERAGING)
        else:
            ctor = (MinMaxObserver if method == "minmax" else percentile_observer_class()).with_args(**p.keywords)
        return dataclasses.replace(spec, observer_or_fake_quant_ctr=ctor)

    quantizer.set_global(dataclasses.replace(c, input_activation=swap(c.input_activation),
                                             output_activation=swap(c.output_activation)))
    return quantizer


def _flat(out) -> torch.Tensor:
    """A model's output(s) as one ``(N, -1)`` float tensor (a detector's several outputs side by side)."""
    parts = out if isinstance(out, (list, tuple)) else [out]
    return torch.cat([p.reshape(p.shape[0], -1).float() for p in parts], 1)


def reference_outputs(reference, images: torch.Tensor, batch: int) -> torch.Tensor:
    """``reference``'s outputs on ``images``, run ``batch`` at a time (the last run takes what is
    left: a graph captured at a fixed batch needs a multiple of it), as one ``(N, -1)`` tensor:
    computed once where many choices are compared with them."""
    with torch.no_grad():
        return torch.cat([_flat(reference(images[i:i + batch])) for i in range(0, len(images), batch)])


def output_error(reference, quantized, images: torch.Tensor, batch: int) -> float:
    """Mean over ``images`` (run ``batch`` at a time, as :func:`reference_outputs`) of
    ``|q - f|^2 / |f|^2`` per image, ``f`` the outputs of ``reference`` (a model, or its
    :func:`reference_outputs` on ``images``) and ``q`` those of ``quantized``: each image weighs
    the same, however large its outputs (the measure :func:`choose_calibration` ranks by)."""
    ref = reference if isinstance(reference, torch.Tensor) else reference_outputs(reference, images, batch)
    if len(ref) != len(images):
        raise ValueError(f"output_error: the reference outputs are for {len(ref)} images, expected "
                         f"{len(images)} (the images given)")
    q = reference_outputs(quantized, images, batch)
    return float(((q - ref).pow(2).sum(1) / ref.pow(2).sum(1).clamp_min(1e-12)).mean())


def _op(node) -> str:
    """An fx node's op as a short name: ``conv2d`` for ``aten.conv2d.default``, ``input``, ``output``."""
    if node.op == "call_function":
        return str(getattr(node.target, "__name__", node.target)).split(".")[0].rstrip("_")
    return {"placeholder": "input"}.get(node.op, node.op)


def activation_groups(gm: torch.fx.GraphModule) -> dict[str, list[str]]:
    """The activation observers of a prepared PT2E graph (weights' and other constants' left out)
    grouped by role, ``"producer -> readers"``: ``"conv2d -> add, mul"`` is every convolution
    output read by an add and a mul (LiteRT's hard-swish input), ``"linear -> output"`` the
    logits. An observer shared by several calls (one module under one or several names: the
    quantizer's shared ranges, which the runtime requires equal) has their roles joined by
    ``" | "`` and all its names in that group."""
    roles: dict[int, set] = {}  # per observer instance: a quantizer's shared ranges are one module under several names
    names: dict[int, list] = {}
    constant = set()
    for node, name in observer_calls(gm).items():
        key, src = id(gm.get_submodule(name)), node.args[0]
        names.setdefault(key, [])
        if name not in names[key]:
            names[key].append(name)
        if not isinstance(src, torch.fx.Node) or src.op == "get_attr":
            constant.add(key)
            continue
        roles.setdefault(key, set()).add(f"{_op(src)} -> {', '.join(sorted({_op(u) for u in node.users}))}")
    groups: dict[str, list[str]] = {}
    for key, r in roles.items():
        if key not in constant:
            groups.setdefault(" | ".join(sorted(r)), []).extend(names[key])
    return groups


class _FakeQuant(torch.nn.Module):
    """What a calibrated observer becomes at conversion (quantize, then dequantize, with its
    scale and zero point), for comparing choices without converting each."""

    def __init__(self, observer):
        super().__init__()
        self.identity = getattr(observer, "dtype", torch.float) not in (
            torch.int8, torch.uint8, torch.qint8, torch.quint8, torch.int16, torch.qint32, torch.int32)
        if self.identity:
            return
        scale, zero = observer.calculate_qparams()
        self.scale, self.zero = scale.float().reshape(-1), zero.int().reshape(-1)
        self.lo, self.hi = int(observer.quant_min), int(observer.quant_max)
        per_channel = observer.qscheme in (torch.per_channel_affine, torch.per_channel_symmetric)
        self.axis = int(observer.ch_axis) if per_channel else None

    def forward(self, x):
        if self.identity:
            return x
        if self.axis is not None:
            return torch.fake_quantize_per_channel_affine(x, self.scale, self.zero, self.axis, self.lo, self.hi)
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero, self.lo, self.hi)


def _spread(total: int, count: int, batch: int) -> torch.Tensor:
    """The indices of at most ``count`` of ``total`` images (a multiple of ``batch``), evenly spaced."""
    n = max(batch, min(count, total) // batch * batch)
    return torch.arange(total) if n >= total else torch.linspace(0, total - 1, n).round().long()


def choose_calibration(reference, images: torch.Tensor, batch: int, observed: dict,
                       methods=AUTO_CANDIDATES, group_methods=GROUP_CANDIDATES, progress=None,
                       simulator: Optional[torch.fx.GraphModule] = None) -> dict:
    """``auto``: from ``observed`` (``{method: a prepared PT2E graph calibrated on images with
    that method}``, the same graph each time), one graph whose activation ranges come from
    several methods, in two steps that compare each choice's outputs with ``reference`` by
    :func:`output_error` (each observer simulated as its quantize / dequantize):

    1. the method of ``methods`` whose graph is closest to fp32 on all ``images``: the base;
    2. each group of activations with the same role (:func:`activation_groups`, the largest first)
       switched to each other method of ``group_methods``, kept where that cuts the error on
       :data:`REFINE_IMAGES` of the images by more than :data:`REFINE_MARGIN`; the switches are
       kept only if together they also cut it on all the images. Measured on
       MobileNetV3-Small (benchmarks/INT8.md): the logits and the SE squeeze outputs take ``mse``
       over an ``average`` base, LiteRT's hard-swish inputs ``minmax`` over an ``mse`` one.

    Returns ``{"graph": the base's graph with the chosen observers swapped in (to convert),
    "base": its method, "errors": {method: error} of step 1, "groups": {group: method} switched,
    "error": the result's error on all images}``. ``progress(total)``: a bar (:func:`..progress.progress_bar`)
    for the second step's trials, advanced after each. ``simulator``: the same network prepared
    as ``observed``'s graphs are (the same observers) but captured with a free batch
    (:func:`..mobile.simulation_graph`), so that every comparison runs :data:`SIM_BATCH` images
    per forward rather than ``batch`` (measured: 4-7x faster trials on MobileNetV3-Small); None, or
    a graph whose observers differ: a copy of ``observed``'s, ``batch`` images at a time."""
    import copy

    images = images[:len(images) // batch * batch]
    groups = sorted(activation_groups(observed[methods[0]]).items(), key=lambda kv: (-len(kv[1]), kv[0]))
    names = sorted(set(observer_calls(observed[methods[0]]).values()))
    if simulator is not None and sorted(set(observer_calls(simulator).values())) == names:
        sim, step = simulator, SIM_BATCH
    else:
        sim, step = copy.deepcopy(observed[methods[0]]), batch
    fake = {m: {n: _FakeQuant(g.get_submodule(n)) for n in names} for m, g in observed.items()}
    choice = {}

    def use(selected, method):
        for n in selected:
            setattr(sim, n, fake[method][n])
            choice[n] = method

    reference = reference_outputs(reference, images, batch)
    spread = _spread(len(images), REFINE_IMAGES, batch)
    few, few_reference = images[spread], reference[spread]
    errors = {}
    for m in methods:
        use(names, m)
        errors[m] = output_error(reference, sim, images, step)
    base = min(methods, key=lambda m: (errors[m], methods.index(m)))
    use(names, base)
    best = output_error(few_reference, sim, few, step)
    switched = {}
    bar = progress(len(groups) * (len(group_methods) - 1)) if progress is not None else None
    for group, members in groups:
        current = choice[members[0]]
        for m in group_methods:
            if m == current or m not in observed:
                continue
            use(members, m)
            e = output_error(few_reference, sim, few, step)
            if bar is not None:
                bar.update(1)
            if e < best * (1 - REFINE_MARGIN):
                best, current = e, m
                switched[group] = m
            else:
                use(members, current)
    if bar is not None:
        bar.close()
    error = output_error(reference, sim, images, step) if switched else errors[base]
    if error >= errors[base]:  # closer on the images compared, not on all of them: keep the base
        use(names, base)
        switched, error = {}, errors[base]
    graph = observed[base]
    for n, m in choice.items():
        if m != base:
            setattr(graph, n, observed[m].get_submodule(n))
    return {"graph": graph, "base": base, "errors": errors, "groups": switched, "error": error}


__all__ = ["AUTO_CANDIDATES", "AVERAGING", "GROUP_CANDIDATES", "PERCENTILE", "PT2E_CALIB_METHODS", "REFINE_IMAGES",
           "REFINE_MARGIN", "SIM_BATCH", "activation_groups", "aten_ops", "choose_calibration", "clipped_observers",
           "output_error", "percentile_bounds", "percentile_observer_class", "reference_outputs",
           "saturation_ranges", "with_calib_method", "within_saturation"]
