"""The model side of ``mobilenets train --qat``: wrapping a trained fp32 model for
quantization-aware training (:func:`qat_model`, which the training loop reaches through its task)
and rebuilding a QAT run's checkpoint (:func:`load_qat_checkpoint`, for ``mobilenets export
--qat``). Here rather than in ``train`` because it builds on ``deploy`` (the layer order); the
recipe side is :mod:`mobilenets.train.qat`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn as nn

from ..train.qat import QAT_TARGETS


def qat_model(model: nn.Module, target: str, img_size: int, example: Optional[torch.Tensor] = None) -> nn.Module:
    """``model`` (fp32, trained) wrapped for quantization-aware training for ``target``."""
    if target not in QAT_TARGETS:
        raise ValueError(f"qat: expected one of {', '.join(QAT_TARGETS)}, got {target!r}")
    if target == "onnx":
        from ..deploy.qat import prepare_qat

        return prepare_qat(model.eval(), example_input=example)
    from ..deploy.qat.pt2e import MobileQAT

    return MobileQAT(model.eval(), target, (img_size, img_size), example=example)


def load_qat_checkpoint(path: Union[str, Path]) -> tuple[nn.Module, dict]:
    """``(the QAT model in eval mode, the checkpoint's recipe)`` of a ``train --qat`` run's
    checkpoint (``best.pt`` / ``last.pt``): the recipe's model rebuilt, wrapped as the run
    wrapped it, and the trained state loaded. ``ValueError`` for a checkpoint of a run without
    ``--qat``."""
    from ..models.info import ModelInfo, set_model_info
    from ..train.checkpoint import load_checkpoint
    from ..train.recipe import Recipe
    from ..train.task import get_task

    ck = load_checkpoint(path)
    r = Recipe.from_dict(ck.get("recipe") or {})
    if not r.qat:
        raise ValueError(f"{path}: not a quantization-aware training checkpoint (its recipe has no qat); "
                         "train one with mobilenets train --qat {onnx,executorch,litert} --pretrained FP32.pt, "
                         "or export this fp32 checkpoint with --int8 (post-training quantization)")
    model = get_task(r.task).build_model(r.replace(pretrained=None), len(ck["classes"]))
    if ck.get("model_info"):
        set_model_info(model, ModelInfo.from_dict(ck["model_info"]))
    qat = qat_model(model, r.qat, r.img_size)
    missing, unexpected = [], []
    try:
        qat.load_state_dict(ck["state_dict"])
    except RuntimeError:
        own = qat.state_dict()
        missing, unexpected = sorted(set(own) - set(ck["state_dict"])), sorted(set(ck["state_dict"]) - set(own))
        if not (missing or unexpected):
            raise
    if missing or unexpected:  # the export forms it was captured with have changed since it was trained
        raise ValueError(f"{path}: this QAT checkpoint's graph does not match this version's {r.qat} export form of "
                         f"{r.model} ({len(missing)} weight(s) missing, e.g. {missing[:1]}; {len(unexpected)} unknown, "
                         f"e.g. {unexpected[:1]}): train QAT again from the fp32 checkpoint with this version")
    return qat.eval(), r.to_dict()


__all__ = ["load_qat_checkpoint", "qat_model"]
