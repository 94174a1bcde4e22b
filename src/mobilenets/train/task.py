"""What a training run learns: its data, model, loss and validation metric. The loop
(:mod:`.loop`) owns everything else (resume, DDP, AMP, EMA, checkpoints, progress, curves) and is
the same for every task.

:class:`ClassificationTask` is the built-in one (``recipe.task = "classify"``). Task models
register theirs with :func:`register_task` (``mobilenets.tasks.detection.training`` registers
``"detect"``); :func:`get_task` finds a recipe's task by name.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from .data import DataBundle, batch_mixer, build_datasets, check_classes
from .evaluate import evaluate


class ClassificationTask:
    """Image classification: ``(images, labels)`` batches, cross-entropy (label smoothing,
    MixUp / CutMix, distillation), validation top-1 / top-5."""

    name = "classify"
    #: the validation metric (a key of :meth:`evaluate`'s dict; higher is better) that picks best.pt
    metric = "top1"
    #: ``collate_fn`` of the loaders (None: PyTorch's default)
    collate_fn: Optional[Callable] = None
    #: optional packages the task needs beyond its data, ``(module, feature)``: the loop checks
    #: them before it builds anything, so a missing extra is one line at the start of a run, not
    #: a traceback after the first epoch
    requires: tuple[tuple[str, str], ...] = ()

    def build_data(self, recipe) -> DataBundle:
        return build_datasets(recipe)

    def check_data(self, data: DataBundle, recipe) -> None:
        """``DatasetError`` for data that cannot train (before any step)."""
        check_classes(data.train.targets, data.num_classes, f"{recipe.dataset} training set")

    def build_model(self, recipe, num_classes: int) -> nn.Module:
        from ..factory import create_model

        kw: dict[str, Any] = {"drop_path_rate": recipe.drop_path_rate, **recipe.model_kwargs}
        if recipe.drop_rate is not None:
            kw["drop_rate"] = recipe.drop_rate
        return create_model(recipe.model, num_classes=num_classes, **kw)

    def load_pretrained(self, model: nn.Module, path: str) -> str:
        """Load ``recipe.pretrained`` (the classifier may differ); a line for the log."""
        from ..weights import load_weights

        rep = load_weights(model, path, strict=False)
        return (f"loaded {rep.loaded} tensors from {path} ({rep.layout} layout; {len(rep.missing)} missing, "
                f"{len(rep.mismatched)} mis-shaped)")

    def val_batch_size(self, recipe) -> int:
        return max(recipe.batch_size, 128)

    def prepare(self, recipe, num_classes: int, teacher: Optional[nn.Module]) -> None:
        """The loss and the batch mixer (called once, before the first step)."""
        from .loop import build_criterion

        self.criterion = build_criterion(recipe, teacher)
        self.mixer = batch_mixer(recipe, num_classes)

    def to_device(self, x, y, device: torch.device, channels_last: bool):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def loss(self, model: nn.Module, x, y) -> tuple[torch.Tensor, float, int]:
        """``(loss, correct, n)`` of one training batch (``correct``: top-1 hits)."""
        target = y
        if self.mixer is not None:
            x, target = self.mixer(x, y)
        logits = model(x)
        loss = self.criterion(logits, x, target)
        return loss, float((logits.detach().argmax(1) == y).sum().item()), len(y)

    def evaluate(self, model: nn.Module, loader, device: torch.device, num_classes: int, dist,
                 channels_last: bool) -> dict:
        return evaluate(model, loader, device, num_classes, dist, channels_last)

    def describe(self, v: dict, prefix: str = "") -> str:
        """One log fragment for validation results ``v``."""
        return f"{prefix}val loss {v['loss']:.4f} top-1 {v['top1']:.2f}% top-5 {v['top5']:.2f}%"


_TASKS: dict[str, Callable[[], Any]] = {"classify": ClassificationTask}


def register_task(name: str, factory: Callable[[], Any]) -> None:
    """Make ``recipe.task = name`` train with ``factory()`` (raises if the name is taken)."""
    if name in _TASKS and _TASKS[name] is not factory:
        raise ValueError(f"training task {name!r} is already registered")
    _TASKS[name] = factory


def get_task(name: str):
    """A fresh task object for ``recipe.task``; ``ValueError`` listing the known tasks."""
    if name not in _TASKS:
        raise ValueError(f"unknown training task {name!r}; choose from {sorted(_TASKS)}")
    return _TASKS[name]()
