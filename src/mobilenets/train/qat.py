"""Quantization-aware fine-tuning on the shared training loop: ``mobilenets train --qat
{onnx,executorch,litert} --pretrained FP32_CHECKPOINT``.

The recipe's model is built, the fp32 checkpoint loaded, and the model wrapped for the target
runtime's INT8 by the task (:func:`mobilenets.tasks.qat.qat_model`): ONNX Runtime's QDQ fake quantization
(:func:`~mobilenets.deploy.prepare_qat`), or PT2E with the runtime's own quantizer for ExecuTorch
and LiteRT (:class:`~mobilenets.deploy.qat.pt2e.MobileQAT`). Both fold the BatchNorms first, so
the fine-tune trains the graph that ships. The loop then trains it like any model; its
checkpoints hold the wrapped model's state, which :func:`mobilenets.tasks.qat.load_qat_checkpoint` rebuilds (the
same preparation, then the weights, fake-quant scales and observer ranges), and
``mobilenets export --qat CKPT`` lowers it for its runtime.

:func:`qat_recipe` gives a QAT run its defaults where the command line left a field alone: a
fine-tune (a tenth of the recipe's learning rate and a quarter of its epochs, at least one; no
warm-up, no MixUp / CutMix, no label smoothing, no EMA, whose averaged fake-quant ranges would
not match the weights) that distils the fp32 checkpoint itself (soft labels, ``distill_alpha``
0.9): the teacher is the model QAT should agree with.
"""

from __future__ import annotations

from typing import Iterable

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


__all__ = ["QAT_TARGETS", "qat_recipe"]
