"""Checkpoint I/O and loading of our own, timm and torchvision layouts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Union

import torch
import torch.nn as nn

from .convert import LAYOUTS, adapt_shape, detect_layout
from .io import CheckpointError, read_checkpoint, resolve_hf_hub, write_checkpoint

__all__ = ["CheckpointError", "LoadReport", "detect_layout", "load_weights", "read_checkpoint",
           "resolve_hf_hub", "save_weights", "write_checkpoint"]

Source = Union[str, Path, Mapping[str, torch.Tensor]]


@dataclass
class LoadReport:
    """What :func:`load_weights` did: the detected layout and any keys it could not place."""

    layout: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)


def _family(model: nn.Module) -> str:
    spec = getattr(model, "spec", None)
    return getattr(spec, "family", "") or ""


def _format_problems(missing, unexpected, mismatched, limit: int = 12) -> str:
    def fmt(title, items):
        if not items:
            return ""
        more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
        return f"\n  {title} ({len(items)}): " + ", ".join(items[:limit]) + more
    return fmt("missing", missing) + fmt("unexpected", unexpected) + fmt("mis-shaped", mismatched)


def load_weights(model: nn.Module, source: Source, strict: bool = True) -> LoadReport:
    """Load a checkpoint into ``model``, in place.

    Args:
        model: a model built by :func:`mobilenets.create_model`.
        source: a path (``.pth/.pt/.bin/.ckpt``: read with ``weights_only=True``;
            ``.safetensors``), ``"hf-hub:org/name"``, or a state dict. The key layout (ours,
            timm's or torchvision's for the same architecture) is detected from the keys.
        strict: raise if any key is missing, unexpected or mis-shaped (default). With
            ``strict=False`` those keys are skipped (e.g. a classifier with another class
            count) and listed in the returned report.

    Raises:
        CheckpointError: unreadable file, unknown layout, or (strict) keys that do not fit,
            listing the missing, unexpected and mis-shaped keys.
    """
    meta: dict = {}
    if isinstance(source, Mapping):
        sd = dict(source)
        where = "state dict"
    else:
        src = str(source)
        path = resolve_hf_hub(src) if src.startswith(("hf-hub:", "hf_hub:")) else Path(src)
        sd, meta = read_checkpoint(path)
        where = src
    if not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{where}: expected a non-empty mapping of names to tensors")
    layout = detect_layout(sd)
    if layout == "unknown":
        raise CheckpointError(
            f"{where}: unrecognised key layout (first keys: {list(sd)[:5]}); expected a mobilenets, "
            f"timm or torchvision checkpoint of the same architecture")
    _, mapper, bn_of = LAYOUTS[layout]
    unexpected: list[str] = []
    if mapper is not None:
        try:
            sd, unexpected = mapper(sd, model)
        except (AttributeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{where}: a {layout} checkpoint cannot be mapped onto "
                                  f"{type(model).__name__} ({e})") from None
    target = model.state_dict()
    missing = [k for k in target if k not in sd]
    unexpected += [k for k in sd if k not in target]
    fitted, mismatched = {}, []
    for k, v in sd.items():
        if k not in target:
            continue
        v = adapt_shape(v, target[k].shape)
        if v.shape != target[k].shape:
            mismatched.append(f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}")
        else:
            fitted[k] = v
    if strict and (missing or unexpected or mismatched):
        raise CheckpointError(
            f"{where} ({layout} layout) does not fit {getattr(model, 'name', type(model).__name__)}:"
            + _format_problems(missing, unexpected, mismatched))
    model.load_state_dict(fitted, strict=False)
    eps, mom = bn_of(_family(model))
    if layout == "mobilenets" and "bn_eps" in meta:
        eps, mom = float(meta["bn_eps"]), float(meta["bn_momentum"])
    if eps is not None and hasattr(model, "set_bn"):
        model.set_bn(eps, mom)
    return LoadReport(layout, len(fitted), missing, unexpected, mismatched)


def save_weights(model: nn.Module, path: Union[str, Path]) -> Path:
    """Save ``model``'s weights in our layout (``.safetensors`` or ``.pth`` by suffix),
    atomically, with the BatchNorm settings and architecture name as metadata."""
    meta = {"format": "mobilenets", "arch": getattr(model, "name", type(model).__name__)}
    bn = next((m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)), None)
    if bn is not None:
        meta.update(bn_eps=repr(bn.eps), bn_momentum=repr(bn.momentum))
    return write_checkpoint(model.state_dict(), path, meta)
