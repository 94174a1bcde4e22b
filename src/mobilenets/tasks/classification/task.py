"""Image classification as a :class:`~mobilenets.tasks.base.Task`: ``(images, labels)``
batches, cross-entropy (label smoothing, MixUp / CutMix, distillation), validation top-1 /
top-5; checkpoints load through :func:`mobilenets.factory.model_from_checkpoint`."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...data.classification import BUILTIN_DATASETS, DataBundle, batch_mixer, build_datasets, check_classes
from ...train.task import register_task
from ..base import Metric, PathLike, Task
from .evaluate import evaluate


def build_criterion(recipe, teacher: Optional[nn.Module]) -> Callable:
    """``criterion(logits, images, targets) -> loss``; targets are class indices or soft
    (MixUp/CutMix) probabilities; label smoothing applies to both."""
    def hard(logits, targets):
        return F.cross_entropy(logits.float(), targets, label_smoothing=recipe.label_smoothing)

    if teacher is None:
        return lambda logits, images, targets: hard(logits, targets)
    from ...train.distill import Distiller
    return Distiller(teacher, hard, recipe.distill_alpha, recipe.distill_temp)


class ClassificationTask(Task):
    """Image classification: ``(images, labels)`` batches, cross-entropy (label smoothing,
    MixUp / CutMix, distillation), validation top-1 / top-5."""

    plural = "classifiers and feature extractors"
    name = "classify"
    models = "classification"
    best_metric = Metric("top1", "top-1", percent=True)
    summary_metrics = (Metric("top5", "top-5", percent=True),)
    default_recipe = "digits"
    datasets = BUILTIN_DATASETS + ("imagefolder",)

    def data_option(self, data: str) -> dict:
        """A built-in dataset (``digits``, ``digit-clutter``, ``fake``), else an image folder."""
        return {"dataset": data} if data in BUILTIN_DATASETS else {"dataset": "imagefolder", "data_dir": data}

    def build_data(self, recipe) -> DataBundle:
        return build_datasets(recipe)

    def check_data(self, data: DataBundle, recipe) -> None:
        check_classes(data.train.targets, data.num_classes, f"{recipe.dataset} training set")

    def build_model(self, recipe, num_classes: int) -> nn.Module:
        from ...factory import create_model

        kw: dict[str, Any] = {"drop_path_rate": recipe.drop_path_rate, **recipe.model_kwargs}
        if recipe.drop_rate is not None:
            kw["drop_rate"] = recipe.drop_rate
        return create_model(recipe.model, num_classes=num_classes, **kw)

    def load_pretrained(self, model: nn.Module, path: str) -> str:
        """Load ``recipe.pretrained`` (the classifier may differ); a line for the log."""
        from ...weights import load_weights

        rep = load_weights(model, path, strict=False)
        return (f"loaded {rep.loaded} tensors from {path} ({rep.layout} layout; {len(rep.missing)} missing, "
                f"{len(rep.mismatched)} mis-shaped)")

    def val_batch_size(self, recipe) -> int:
        return max(recipe.batch_size, 128)

    def prepare(self, recipe, num_classes: int, teacher: Optional[nn.Module]) -> None:
        """The loss and the batch mixer (called once, before the first step)."""
        self.criterion = build_criterion(recipe, teacher)
        self.mixer = batch_mixer(recipe, num_classes)

    def loss(self, model: nn.Module, x, y) -> tuple[torch.Tensor, float, int]:
        """``(loss, correct, n)`` of one training batch (``correct``: top-1 hits)."""
        target = y
        if self.mixer is not None:
            x, target = self.mixer(x, y)
        logits = model(x)
        loss = self.criterion(logits, x, target)
        return loss, float((logits.detach().argmax(1) == y).sum().item()), len(y)

    def train_stats(self, loss_sum: float, correct: float, n: float) -> dict:
        return {**super().train_stats(loss_sum, correct, n), "train_top1": 100 * correct / max(1.0, n)}

    def summarize(self, final: dict) -> list[str]:
        f = final
        return super().summarize(f) + ([f"average of the last {f['avg_of']} epochs: top-1 {f['avg_val_top1']:.2f}%"]
                                       if "avg_val_top1" in f else [])

    def describe_train(self, row: dict) -> str:
        return f" top-1 {row['train_top1']:.2f}%"

    def evaluate(self, model: nn.Module, loader, device: torch.device, num_classes: int, dist,
                 channels_last: bool) -> dict:
        return evaluate(model, loader, device, num_classes, dist, channels_last)

    def describe(self, v: dict, prefix: str = "") -> str:
        return f"{prefix}val loss {v['loss']:.4f} top-1 {v['top1']:.2f}% top-5 {v['top5']:.2f}%"

    def load(self, path: PathLike, use_ema: bool = True, **options: Any) -> tuple[nn.Module, dict]:
        """``options``: ``model_name`` / ``num_classes`` for a plain weights file (see
        :func:`mobilenets.factory.model_from_checkpoint`)."""
        from ...factory import model_from_checkpoint

        return model_from_checkpoint(path, use_ema=use_ema, **options)

    def eval_checkpoint(self, path: PathLike, data: Optional[str], *, batch_size: int = 128,
                        use_ema: bool = True, img_size: Optional[int] = None, confusion_png=None,
                        model_name: Optional[str] = None, **options: Any) -> dict:
        """Top-1 / top-5 / loss (:func:`.infer.eval_checkpoint`; ``data`` None: ``digits``);
        the confusion matrix drawn to ``confusion_png`` (default: ``<checkpoint>_confusion.png``)."""
        from pathlib import Path

        from .infer import eval_checkpoint

        file = options.get("file")
        png = confusion_png or (Path(file).with_name(Path(file).stem + "_confusion.png") if file else
                                Path(path).with_name(Path(path).stem + "_confusion.png"))
        return eval_checkpoint(path, data or "digits", batch_size, use_ema=use_ema, img_size=img_size,
                               confusion_png=png, model_name=model_name, file=file)

    def eval_report(self, path: PathLike, data: Optional[str], res: dict) -> list[str]:
        what = f"{res['file']} ({res['runtime']}, exported from {path})" if res.get("file") else path
        lines = [f"{what} on {data or 'digits'}: top-1 {res['top1']:.2f}%  top-5 {res['top5']:.2f}%  "
                 f"loss {res['loss']:.4f}  ({res['n']} images)"]
        if res.get("confusion_png"):
            lines.append(f"confusion matrix: {res['confusion_png']}")
        return lines

    def predict(self, path: PathLike, images, *, out_dir=None, use_ema: bool = True, topk: int = 5,
                model_name: Optional[str] = None, **options: Any) -> list[dict]:
        from .infer import predict

        if topk < 1:
            raise ValueError(f"--topk must be >= 1, got {topk}")
        return predict(path, images, topk, use_ema=use_ema, model_name=model_name)

    def show_prediction(self, r: dict, **options: Any) -> list[str]:
        return [str(r["image"])] + [f"  {p * 100:6.2f}%  {name}" for name, p in r["top"]]


register_task(ClassificationTask.name, ClassificationTask)
