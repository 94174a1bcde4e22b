"""Detection checkpoints -> our detectors: our own files, and torchvision's
(``ssdlite320_mobilenet_v3_large``, ``fasterrcnn_mobilenet_v3_large[_320]_fpn``, the COCO
weights included).

torchvision's detection backbones are its classification ``features`` (SSDLite splits it at the
C4 expansion: ``backbone.features.0`` up to and including that block's expansion conv,
``backbone.features.1`` the rest; Faster R-CNN keeps it whole as ``backbone.body``); the shared
loading, mapping and checking is :mod:`mobilenets.tasks.weights`.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import torch.nn as nn

from ..weights import load_task_weights

HINT = ("a detector checkpoint fits only the same backbone, width, num_classes and builder options, e.g. "
        "an SSDLite on MobileNetV3 trained from a pretrained backbone needs reduced_tail=False; "
        "mobilenets.tasks.detection.infer.load_detector_checkpoint rebuilds a training run's model from its recipe")


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


def split_torchvision(sd: dict) -> Optional[tuple[dict, dict]]:
    """``(classification-layout backbone keys, the other keys)`` of a torchvision detection
    state dict; ``None`` for any other layout."""
    if any(k.startswith("backbone.features.0.") for k in sd):
        return _tv_ssdlite_backbone(sd), {k: v for k, v in sd.items() if not k.startswith("backbone.features.")}
    if any(re.match(r"^backbone\.body\.\d+\.", k) for k in sd):
        return _tv_fpn_backbone(sd), {k: v for k, v in sd.items() if not re.match(r"^backbone\.body\.\d+\.", k)}
    return None


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
    return load_task_weights(model, source, split_torchvision, model.backbone.body.body, "backbone.body.body.",
                             strict, HINT, task="detect")
