"""How INT8 post-training quantization picks each activation's range from the calibration images
(``--calib-method``), for the PT2E runtimes (ExecuTorch, LiteRT):

* ``mse`` (their default): PT2E's ``HistogramObserver``: a histogram of every value seen, then the
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
  every method that covers them (all three above: those values are a whole image's worth of a 1x1
  map, too many for a percentile to clip) leaves the rest of its SE signal at zero (top-1 at
  chance), this one keeps it (benchmarks/INT8.md).

Weights are unchanged (per-channel min / max, symmetric). ONNX Runtime has its own set
(``minmax``, ``entropy``, ``percentile``: :func:`mobilenets.deploy.quantize_onnx`).
"""

from __future__ import annotations

import dataclasses

import torch

#: ``--calib-method`` values for the PT2E runtimes, the default first
PT2E_CALIB_METHODS = ("mse", "minmax", "percentile", "average")
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


__all__ = ["AVERAGING", "PERCENTILE", "PT2E_CALIB_METHODS", "percentile_bounds", "percentile_observer_class", "with_calib_method"]
