"""Detection checkpoints -> our detectors: our own files, and torchvision's
(``ssdlite320_mobilenet_v3_large``, ``fasterrcnn_mobilenet_v3_large[_320]_fpn``, the COCO
weights included).

The necks and heads are torchvision's modules, so their keys are torchvision's. Only the
backbone differs: torchvision's detection backbones are its classification ``features``
(SSDLite splits it at the C4 expansion: ``backbone.features.0`` up to and including that block's
expansion conv, ``backbone.features.1`` the rest; Faster R-CNN keeps it whole as
``backbone.body``). Those keys are put back into the classification layout and mapped onto our
backbone by :mod:`mobilenets.weights.convert`'s torchvision layout, every key and shape checked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Union

import torch
import torch.nn as nn

from ...weights import CheckpointError, format_key_problems, read_checkpoint, resolve_hf_hub, unwrap_state_dict
from ...weights.convert import LAYOUTS

Source = Union[str, Path, Mapping[str, torch.Tensor]]


def _read(source: Source) -> tuple[dict, str]:
    if isinstance(source, Mapping):
        sd = dict(source)
        if not all(isinstance(v, torch.Tensor) for v in sd.values()):
            sd, _ = unwrap_state_dict(sd, "state dict")
        return sd, "state dict"
    src = str(source)
    path = resolve_hf_hub(src) if src.startswith(("hf-hub:", "hf_hub:")) else Path(src)
    return read_checkpoint(path)[0], src


def _tv_ssdlite_backbone(sd: dict) -> dict:
    """torchvision SSDLite's split ``backbone.features.{0,1}`` -> classification ``features.i``."""
    first = [int(m[1]) for k in sd if (m := re.match(r"^backbone\.features\.0\.(\d+)\.", k))]
    c4 = max(first)
    out = {}
    for k, v in sd.items():
        if m := re.match(r"^backbone\.features\.0\.(\d+)\.(.+)$", k):
            i, rest = int(m[1]), m[2]
            out[f"features.{i}.{rest}" if i < c4 else f"features.{c4}.block.0.{rest}"] = v
        elif m := re.match(r"^backbone\.features\.1\.0\.(\d+)\.(.+)$", k):
            out[f"features.{c4}.block.{m[1]}.{m[2]}"] = v  # a slice of the block: its keys are kept
        elif m := re.match(r"^backbone\.features\.1\.(\d+)\.(.+)$", k):
            out[f"features.{c4 + int(m[1])}.{m[2]}"] = v
    return out


def _tv_fpn_backbone(sd: dict) -> dict:
    """torchvision Faster R-CNN's ``backbone.body.i`` -> classification ``features.i``."""
    return {f"features.{m[1]}.{m[2]}": v for k, v in sd.items()
            if (m := re.match(r"^backbone\.body\.(\d+)\.(.+)$", k))}


def to_ours(sd: dict, model: nn.Module) -> tuple[dict, str]:
    """``(state dict in our detector's keys, layout name)`` for a state dict in our layout or
    torchvision's; backbone keys that do not map are left under their torchvision names (the
    strict check then lists them)."""
    target = model.state_dict()
    if any(k.startswith("backbone.features.0.") for k in sd):
        layout, backbone_sd = "torchvision", _tv_ssdlite_backbone(sd)
        rest = {k: v for k, v in sd.items() if not k.startswith("backbone.features.")}
    elif any(re.match(r"^backbone\.body\.\d+\.", k) for k in sd):
        layout, backbone_sd = "torchvision", _tv_fpn_backbone(sd)
        rest = {k: v for k, v in sd.items() if not re.match(r"^backbone\.body\.\d+\.", k)}
    else:
        return sd, "mobilenets"
    body = model.backbone.body.body
    mapped, unmapped = LAYOUTS["torchvision"].mapper(backbone_sd, body)
    prefix = "backbone.body.body."
    out = {prefix + k: v for k, v in mapped.items()}
    out.update({f"backbone.features.{k}": v for k, v in ((k, backbone_sd[k]) for k in unmapped)})
    # FrozenBatchNorm2d has no num_batches_tracked (torchvision drops it when loading too)
    out.update({k: v for k, v in rest.items() if k in target or not k.endswith("num_batches_tracked")})
    return {k: v for k, v in out.items() if k in target or not k.endswith("num_batches_tracked")}, layout


def load_detector_weights(model: nn.Module, source: Any, strict: bool = True) -> dict:
    """Load a detection checkpoint (ours or torchvision's) into ``model`` in place.

    Args:
        model: a detector from :func:`mobilenets.create_model`.
        source: a path (``.pth``, ``.safetensors``, a training checkpoint), ``hf-hub:`` or a
            state dict.
        strict: raise if any key is missing, unexpected or mis-shaped.

    Returns:
        ``{"layout", "missing", "unexpected", "mismatched"}``.

    Raises:
        CheckpointError: the file does not fit, listing the keys (e.g. a checkpoint of another
            backbone or class count).
    """
    sd, where = _read(source)
    sd, layout = to_ours(sd, model)
    target = model.state_dict()
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
                  for k, v in sd.items() if k in target and v.shape != target[k].shape]
    if strict and (missing or unexpected or mismatched):
        raise CheckpointError(f"{where} ({layout} layout) does not fit {getattr(model, 'name', type(model).__name__)}:"
                              + format_key_problems(missing, unexpected, mismatched)
                              + "\n  (a detector checkpoint fits only the same backbone, width, num_classes and "
                                "builder options, e.g. an SSDLite on MobileNetV3 trained from a pretrained "
                                "backbone needs reduced_tail=False; mobilenets.tasks.detection.infer."
                                "load_detector_checkpoint rebuilds a training run's model from its recipe)")
    bad = {m.split(":")[0] for m in mismatched}
    model.load_state_dict({k: v for k, v in sd.items() if k in target and k not in bad}, strict=False)
    return {"layout": layout, "missing": missing, "unexpected": unexpected, "mismatched": mismatched}
