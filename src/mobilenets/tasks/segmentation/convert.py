"""Segmentation checkpoints -> our segmenters: our own files, and torchvision's
(``lraspp_mobilenet_v3_large``, ``deeplabv3_mobilenet_v3_large``, the FCN variant; the
COCO-with-VOC-labels weights included).

torchvision's segmentation backbones are its classification ``features`` behind an
``IntermediateLayerGetter``: ``backbone.<i>...`` is ``features.<i>...``. The shared loading,
mapping and checking is :mod:`mobilenets.tasks.weights`.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import torch.nn as nn

from ..weights import load_task_weights

HINT = ("a segmentation checkpoint fits only the same backbone, width, output_stride, num_classes and "
        "aux_loss; mobilenets.tasks.segmentation.infer.load_segmenter_checkpoint rebuilds a training "
        "run's model from its recipe")
_TV_BACKBONE = re.compile(r"^backbone\.(\d+)\.(.+)$")


def split_torchvision(sd: dict) -> Optional[tuple[dict, dict]]:
    """``(classification-layout backbone keys, the other keys)`` of a torchvision segmentation
    state dict; ``None`` for any other layout (ours: ``backbone.body...``)."""
    if not any(_TV_BACKBONE.match(k) for k in sd):
        return None
    backbone = {f"features.{m[1]}.{m[2]}": v for k, v in sd.items() if (m := _TV_BACKBONE.match(k))}
    return backbone, {k: v for k, v in sd.items() if not _TV_BACKBONE.match(k)}


def load_segmenter_weights(model: nn.Module, source: Any, strict: bool = True) -> dict:
    """Load a segmentation checkpoint (ours or torchvision's) into ``model`` in place.

    Args:
        model: a segmenter from :func:`mobilenets.create_model` (``lraspp_*``, ``deeplabv3_*``,
            ``fcn_*``).
        source: a path (``.pth``, ``.safetensors``, a training checkpoint), ``hf-hub:`` or a
            state dict.
        strict: raise if any key is missing, unexpected or mis-shaped.

    Returns:
        ``{"layout", "missing", "unexpected", "mismatched"}``.

    Raises:
        CheckpointError: the file does not fit, listing the keys.
    """
    return load_task_weights(model, source, split_torchvision, model.backbone.body, "backbone.body.",
                             strict, HINT, task="segment")
