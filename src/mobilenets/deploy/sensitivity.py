"""Per-layer INT8 sensitivity and mixed precision for the on-device runtimes (PT2E).

:func:`layer_sensitivity` quantizes ONE layer at a time with the runtime's own quantizer (every
other layer stays float), runs PT2E's quantized reference on calibration images and measures how
far its logits move from fp32 (relative RMS, and the top-1 agreement). The ranking says which
layers to keep in float; :func:`export_mobile`'s ``float_layers`` (and ``mobilenets export
--keep-float K``) keeps them float in the file, which XNNPACK / LiteRT then run as float kernels
between the integer ones.

The layers are the convolutions and linears of the export form (BatchNorms folded), named by
their module path in the model. Keeping a layer float means its conv / linear and the ops of
the same module (its activation) carry no quantization annotation; the next layer quantizes its
own input as usual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn

from .pt2e_filter import LayerFilter, quantizable_layers


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer quantized alone: ``rel_rms`` of the logits against fp32 (RMS of the
    difference / RMS of fp32) and ``agreement`` (top-1 with fp32) on the calibration images."""

    layer: str
    kind: str
    rel_rms: float
    agreement: float
    index: int = 0   # position in the network


def layer_sensitivity(model: nn.Module, runtime="executorch", calib="digits", input_size=(224, 224),
                      calib_count: int = 64, layers: Optional[Sequence[str]] = None,
                      progress: bool = True, log: Optional[Callable[[str], None]] = None) -> list[LayerSensitivity]:
    """Each layer of ``model`` quantized alone with ``runtime``'s PT2E quantizer, most sensitive
    first (largest ``rel_rms``). ``calib``: a source name (``"digits"``, ``"fake"``, a folder) or
    images; the same images calibrate and measure. ``layers``: a subset (module paths)."""
    from ..models.info import model_info
    from ..progress import progress_iter
    from .mobile import pt2e_quantize, prepare, resolve_calibration
    from .runtimes import mobile_runtime

    rt = mobile_runtime(runtime)
    rt.require()
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    _, form, in_chans = prepare(model, target=rt.forms_for(int8=True), main_output=rt.main_output)
    images = resolve_calibration(calib, size, in_chans, calib_count)
    all_layers = quantizable_layers(form)
    chosen = list(layers) if layers is not None else all_layers
    unknown = [n for n in chosen if n not in all_layers]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], all_layers, n=3)
        raise ValueError(f"no quantizable layer {unknown[0]!r} in {model_info(model).name}"
                         + (f"; did you mean {close}?" if close else f"; expected one of {all_layers[:5]}..."))
    x = images[:1]
    with torch.no_grad():
        ref = form(images)
    kinds = dict((n, type(m).__name__) for n, m in form.named_modules())
    out = []
    for name in progress_iter(chosen, "layers", enabled=progress):
        # every other layer float: the annotations outside this module are dropped
        q = pt2e_quantize(form, x, images, LayerFilter(rt.pt2e_quantizer(), only=[name]).quantizer,
                          fold_quantize=rt.fold_quantize)
        with torch.no_grad():
            got = torch.cat([q(images[i:i + 1]) for i in range(len(images))])
        rel = float((got - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-12))
        agree = float((got.argmax(1) == ref.argmax(1)).float().mean())
        out.append(LayerSensitivity(name, kinds.get(name, ""), rel, agree, all_layers.index(name)))
        if log is not None:
            log(f"{name}: rel RMS {rel:.4f}, agreement {100 * agree:.1f}%")
    return sorted(out, key=lambda s: -s.rel_rms)


def plot_sensitivity(result: Sequence[LayerSensitivity], path, title: str = "INT8 sensitivity per layer") -> None:
    """A bar chart of each layer's error when quantized alone, in network order."""
    from ..analysis.plots import _plt, save_figure

    plt = _plt()
    result = sorted(result, key=lambda r: r.index)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * len(result)), 3.6))
    ax.bar(range(len(result)), [r.rel_rms for r in result], color="#4477aa")
    ax.set_xticks(range(len(result)))
    ax.set_xticklabels([r.layer for r in result], rotation=90, fontsize=6)
    ax.set_ylabel("logits rel. RMS error vs fp32")
    ax.set_title(title)
    save_figure(fig, path)


__all__ = ["LayerFilter", "LayerSensitivity", "layer_sensitivity", "plot_sensitivity", "quantizable_layers"]
