"""The one Task protocol: what classification, detection and segmentation each supply to the
task-agnostic training engine (:mod:`mobilenets.train.loop`) and to the commands around it.

A task is a class with these members (:class:`Task` holds the shared defaults; a task
overrides what differs):

* identity: ``name`` (the recipe's and ``--task``'s spelling: ``classify`` / ``detect`` /
  ``segment``), ``models`` (the registry's task of its models: ``classification`` /
  ``detection`` / ``segmentation``; :func:`mobilenets.train.task.get_task` takes either),
  ``default_recipe`` (the named recipe ``mobilenets train --task <name>`` starts from),
  ``requires`` (optional packages, checked before anything is built);
* data: ``build_data(recipe)`` -> a :class:`~mobilenets.data.classification.DataBundle`,
  ``check_data``, ``collate_fn``;
* model: ``build_model(recipe, num_classes)``, ``load_pretrained``;
* loss: ``prepare(recipe, num_classes, teacher)`` once, then ``to_device`` and
  ``loss(model, x, y) -> (loss, correct, n)`` per batch; ``train_stats(loss_sum, correct, n)``
  (the history row's training entries);
* validation metric: ``best_metric`` (a :class:`Metric`: its key in ``evaluate``'s dict, label,
  direction), ``evaluate(model, loader, device, num_classes, dist, channels_last)`` -> dict;
* summary: ``describe(values)`` (one log fragment);
* after training: ``load(checkpoint)`` -> ``(model, info)``, the model rebuilt with the
  architecture options its recipe recorded (:func:`mobilenets.model_from_checkpoint` dispatches
  here by the checkpoint's task); ``eval_checkpoint``, ``predict``;
* export: ``export_module(model)`` (what every runtime exports: tensor in, tensors out),
  ``export_formats`` / ``int8_formats`` (the runtimes it goes to), ``export(...)`` (through the
  one export driver, :func:`mobilenets.deploy.export_mobile`, unless the task's file needs its
  own checks) -> :class:`Exported`; ``mobilenets export`` has no per-task branch.

A new task subclasses :class:`Task` in ``tasks/<task>/`` and registers itself with
:func:`mobilenets.train.task.register_task` when its module is imported (``tasks/zoo.py``
imports every task module).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
import torch.nn as nn

from ..data import DataBundle
from ..deploy.runtimes import EXPORT_FORMATS, FORMAT_LABELS, runtime_for  # noqa: F401  (the Task's export protocol)

PathLike = Union[str, Path]


@dataclass(frozen=True)
class Exported:
    """What :meth:`Task.export` wrote: the file, its input shape (a string, ``1x3x224x224``), how
    it was made (``kind``: precision and method), what was checked (``checked``: one phrase) and
    whether it takes normalized inputs (``normalized``; a detector's file normalizes itself)."""

    path: Path
    input_shape: str
    kind: str
    checked: str
    normalized: bool = True


@dataclass(frozen=True)
class Metric:
    """The validation metric that picks ``best.pt``.

    ``name``: its key in the task's ``evaluate`` dict (the history has ``val_<name>``);
    ``label``: how logs print it; ``higher_is_better``: its direction; ``percent``: a value in
    percent (top-1) rather than in [0, 1] (mAP, mIoU)."""

    name: str
    label: str
    higher_is_better: bool = True
    percent: bool = False

    def better(self, new: Optional[float], old: Optional[float]) -> bool:
        """``new`` beats ``old`` (``old`` None: nothing yet); a missing or NaN ``new`` never does."""
        if new is None or (isinstance(new, float) and math.isnan(new)):
            return False
        if old is None:
            return True
        return new > old if self.higher_is_better else new < old

    def format(self, value: float) -> str:
        return f"{value:.2f}%" if self.percent else f"{value:.4f}"


class Task:
    """Shared defaults of the Task protocol (see the module notes); subclasses set ``name``,
    ``models``, ``best_metric``, ``default_recipe`` and implement data, model, loss, evaluate,
    describe and load."""

    name: str = ""
    models: str = ""
    best_metric: Metric
    default_recipe: str = ""
    #: the validation metrics the end-of-training summary prints after the best one
    summary_metrics: tuple[Metric, ...] = ()
    #: the recipe's ``dataset`` values the task reads
    datasets: tuple[str, ...] = ()
    #: ``collate_fn`` of the loaders (None: PyTorch's default)
    collate_fn: Optional[Callable] = None
    #: optional packages the task needs beyond its data, ``(module, feature)``: the loop checks
    #: them before it builds anything, so a missing extra is one line at the start of a run, not
    #: a traceback after the first epoch
    requires: tuple[tuple[str, str], ...] = ()

    # --- data and model ----------------------------------------------------------------------
    def data_option(self, data: str) -> dict:
        """The recipe fields ``--data DATA`` sets (``dataset``, ``data_dir``)."""
        raise NotImplementedError

    def fit_recipe(self, base, recipe, size_given: bool):
        """``recipe`` (the named recipe ``base`` with the user's changes) adjusted to its model
        (e.g. a detector's native input size) before training; unchanged by default."""
        return recipe

    def build_data(self, recipe) -> DataBundle:
        raise NotImplementedError

    def check_data(self, data: DataBundle, recipe) -> None:
        """``DatasetError`` for data that cannot train (before any step)."""

    def build_model(self, recipe, num_classes: int) -> nn.Module:
        raise NotImplementedError

    def load_pretrained(self, model: nn.Module, path: str) -> str:
        """Load ``recipe.pretrained`` into ``model``; a line for the log."""
        raise NotImplementedError

    def val_batch_size(self, recipe) -> int:
        return recipe.batch_size

    # --- loss --------------------------------------------------------------------------------
    def prepare(self, recipe, num_classes: int, teacher: Optional[nn.Module]) -> None:
        """Set up the loss (called once, before the first step)."""

    def to_device(self, x, y, device: torch.device, channels_last: bool):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def loss(self, model: nn.Module, x, y) -> tuple[torch.Tensor, float, int]:
        """``(loss, correct, n)`` of one training batch (``correct``: what :meth:`train_stats`
        turns into a training metric; 0 when the task has none)."""
        raise NotImplementedError

    def train_stats(self, loss_sum: float, correct: float, n: float) -> dict:
        """The history row's training entries from the epoch's sums (over every rank)."""
        return {"train_loss": loss_sum / max(1.0, n)}

    # --- validation and summary --------------------------------------------------------------
    def evaluate(self, model: nn.Module, loader, device: torch.device, num_classes: int, dist,
                 channels_last: bool) -> dict:
        raise NotImplementedError

    def describe(self, v: dict, prefix: str = "") -> str:
        """One log fragment for validation results ``v``."""
        m = self.best_metric
        return f"{prefix}val {m.label} {m.format(v[m.name])}"

    def summarize(self, final: dict) -> list[str]:
        """The end-of-training summary lines for the last history row (``final``): the best
        metric, then :attr:`summary_metrics`, then the EMA's best metric."""
        m = self.best_metric
        if f"val_{m.name}" not in final:
            return []
        return ["  ".join(f"{'final val ' if x is m else ''}{x.label} {x.format(final[f'val_{x.name}'])}"
                          for x in (m, *self.summary_metrics))
                + (f"  (EMA {m.label} {m.format(final[f'ema_val_{m.name}'])})" if f"ema_val_{m.name}" in final else "")]

    def describe_train(self, row: dict) -> str:
        """The training part of an epoch's log line, after the loss."""
        return ""

    # --- after training ----------------------------------------------------------------------
    def load(self, path: PathLike, use_ema: bool = True, **options: Any) -> tuple[nn.Module, dict]:
        """``(model in eval mode, info)`` from this task's training checkpoint: the model
        rebuilt with the architecture options its recipe recorded, weights loaded."""
        raise NotImplementedError

    def eval_checkpoint(self, path: PathLike, data: Optional[str], *, batch_size: int = 128,
                        use_ema: bool = True, img_size: Optional[int] = None, **options: Any) -> dict:
        """The task's metrics of a checkpoint on ``data`` (None: the run's own validation data)."""
        raise NotImplementedError

    def eval_report(self, path: PathLike, data: Optional[str], res: dict) -> list[str]:
        """:meth:`eval_checkpoint`'s result as printable lines."""
        raise NotImplementedError

    def predict(self, path: PathLike, images, *, out_dir: Optional[PathLike] = None, use_ema: bool = True,
                **options: Any) -> list[dict]:
        """One dict per image, in order: the prediction, or ``{"image", "error"}`` for an image
        that could not be read (the others are still predicted)."""
        raise NotImplementedError

    def show_prediction(self, r: dict, **options: Any) -> list[str]:
        """One :meth:`predict` result as printable lines."""
        raise NotImplementedError

    # --- export --------------------------------------------------------------------------------
    #: the export formats its models go to, and those with INT8 (:data:`EXPORT_FORMATS`)
    export_formats: tuple[str, ...] = tuple(EXPORT_FORMATS)
    int8_formats: tuple[str, ...] = tuple(EXPORT_FORMATS)
    #: its models, for messages (``classifiers``), and why its export formats are limited
    plural: str = "models"
    export_why: str = ""

    def qat_model(self, model: nn.Module, recipe) -> nn.Module:
        """``model`` (trained fp32) wrapped for quantization-aware training for ``recipe.qat``'s
        runtime (:func:`mobilenets.tasks.qat.qat_model`); the loop trains what this returns."""
        from .qat import qat_model

        return qat_model(model, recipe.qat, recipe.img_size)

    def calibration(self, source: str, model: nn.Module, input_size: tuple[int, int], count: int = 128):
        """INT8 calibration images for ``model``'s exported file from ``source`` (``--calib``: a
        built-in dataset name or an image folder), as the file takes them: a
        :class:`~mobilenets.deploy.calibration.CalibrationSet` (``images``, and ``summary()`` of what
        was used). By default through the evaluation transform, normalized as the model's
        :class:`~mobilenets.models.info.ModelInfo` says (a checkpoint's: as it was trained)."""
        from ..deploy.calibration import calibration_set
        from ..models.info import model_info

        info = model_info(model)
        return calibration_set(source, count=count, input_size=input_size, in_chans=info.in_chans, mean=info.mean,
                               std=info.std, crop_pct=info.crop_pct, interpolation=info.interpolation,
                               crop_mode=info.crop_mode)

    def export_module(self, model: nn.Module) -> nn.Module:
        """What every runtime exports: a module taking a normalized image batch and returning
        tensors (a classifier: its logits, a feature extractor: its maps, a segmenter: its
        ``out`` (and ``aux``) logits). The model itself unless the task wraps it."""
        return model

    def export(self, model: nn.Module, fmt: str, path: PathLike, input_size: tuple[int, int], *,
               calib: Optional[torch.Tensor] = None, opset: int = 17, dynamic_batch: bool = False,
               allow_fallback: bool = False, float_layers: tuple = (), calib_method: Optional[str] = None) -> Exported:
        """Write :meth:`export_module` of ``model`` as a ``fmt`` file (:data:`EXPORT_FORMATS`)
        through the one export driver, verified by running it in its runtime; INT8 when
        ``calib`` (normalized images) is given, with ``float_layers`` (module paths) kept float
        (ExecuTorch, LiteRT) and the activation ranges chosen by ``calib_method``
        (:func:`~mobilenets.deploy.export_mobile`). ``ValueError`` for a format or option this task's models do not
        take."""
        from ..deploy.mobile import export_mobile

        self.check_export(fmt, calib is not None, dynamic_batch)
        if float_layers and (fmt == "onnx" or calib is None):
            raise ValueError("float layers (mixed precision) are for INT8 exports to executorch or tflite; got "
                             + ("--format onnx" if fmt == "onnx" else "an fp32 export"))
        res = export_mobile(runtime_for(fmt, opset, dynamic_batch), self.export_module(model), path, input_size,
                            calib, batch_size=2 if dynamic_batch else 1, allow_fallback=allow_fallback,
                            float_layers=tuple(float_layers), calib_method=calib_method)
        shape = "x".join(str(s) for s in res.input_shape)
        if dynamic_batch:
            shape = "N" + shape[shape.index("x"):]
        method = "static, QDQ" if fmt == "onnx" else "PT2E static, per-channel weights"
        if res.calib_method or calib_method:
            method += f", {res.calib_method or calib_method} ranges"
        kind = f"INT8 ({method})" if calib is not None else "fp32, BatchNorm folded"
        if float_layers:
            kind = kind[:-1] + f"; {len(float_layers)} layer(s) kept float)"
        return Exported(res.path, shape, kind, (f"opset {opset}; " if fmt == "onnx" else "") + res.summary())

    def check_export(self, fmt: str, int8: bool, dynamic_batch: bool) -> None:
        """``ValueError`` naming what this task's models export to, for a format or INT8 they
        do not take."""
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"unsupported format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
        if fmt not in self.export_formats:
            from ..train.task import get_task, task_names
            takers = [get_task(t).plural for t in task_names() if fmt in get_task(t).export_formats]
            raise ValueError(f"{self.plural} export to {' / '.join(FORMAT_LABELS[f] for f in self.export_formats)} "
                             f"only{f' ({self.export_why})' if self.export_why else ''}; --format {fmt} is for "
                             + " and ".join(takers))
        if int8 and fmt not in self.int8_formats:
            raise ValueError(f"--int8 {FORMAT_LABELS[fmt]} exports are not for {self.plural}: they export "
                             f"{FORMAT_LABELS[fmt]} in fp32 (BatchNorm folded)"
                             + (f", or INT8 with --format {'|'.join(self.int8_formats)}" if self.int8_formats else ""))
