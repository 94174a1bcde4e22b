"""Quantization-aware fine-tuning on the shared training loop: ``mobilenets train --qat
{onnx,executorch,litert} --pretrained FP32_CHECKPOINT``.

The recipe's model is built, the fp32 checkpoint loaded, and the model wrapped for the target
runtime's INT8 (:func:`qat_model`): ONNX Runtime's QDQ fake quantization
(:func:`~mobilenets.deploy.prepare_qat`), or PT2E with the runtime's own quantizer for ExecuTorch
and LiteRT (:class:`~mobilenets.deploy.qat.pt2e.MobileQAT`). Both fold the BatchNorms first, so
the fine-tune trains the graph that ships. The loop then trains it like any model; its
checkpoints hold the wrapped model's state, which :func:`load_qat_checkpoint` rebuilds (the
same preparation, then the weights, fake-quant scales and observer ranges), and
``mobilenets export --qat CKPT`` lowers it for its runtime.

:func:`qat_recipe` gives a QAT run its defaults where the command line left a field alone: a
fine-tune (a tenth of the recipe's learning rate and a quarter of its epochs, at least one; no
warm-up, no MixUp / CutMix, no label smoothing, no EMA, whose averaged fake-quant ranges would
not match the weights) that distils the fp32 checkpoint itself (soft labels, ``distill_alpha``
0.9): the teacher is the model QAT should agree with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Union

import torch
import torch.nn as nn

#: ``--qat`` values: the runtime the INT8 model will run in
QAT_TARGETS = ("onnx", "executorch", "litert")


def qat_recipe(recipe, given: Iterable[str] = ()):
    """``recipe`` with the QAT fine-tune defaults for every field not in ``given`` (the fields the
    user set); unchanged when ``recipe.qat`` is None."""
    if not recipe.qat:
        return recipe
    defaults = {"lr": recipe.lr / 10, "epochs": max(1, round(recipe.epochs / 4)), "warmup_epochs": 0.0,
                "mixup": 0.0, "cutmix": 0.0, "label_smoothing": 0.0, "ema_decay": 0.0, "avg_last_k": 0,
                "teacher": recipe.pretrained, "distill_alpha": 0.9, "drop_path_rate": 0.0}
    given = set(given)
    return recipe.replace(**{k: v for k, v in defaults.items() if k not in given})


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
    qat.load_state_dict(ck["state_dict"])
    return qat.eval(), r.to_dict()


__all__ = ["QAT_TARGETS", "load_qat_checkpoint", "qat_model", "qat_recipe"]
