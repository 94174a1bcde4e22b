"""What the task models' training tasks (``"detect"``, ``"segment"``) share on the library's one
training loop: where their data come from (the built-in digit-scenes at the training size, or a
folder), the checks before any step, and the classification-only options they refuse."""

from __future__ import annotations

from typing import Optional

import torch.nn as nn

from ..data import DataBundle, DatasetError
from .base import Task


def data_sources(recipe, fill) -> tuple[str, Optional[list], dict]:
    """``(spec, fill, per-split options)``: ``"digit-scenes"`` generated at the training size
    with the recipe's counts and seed (``fill``: the scenes' mean, for padding), or the folder
    in ``data_dir`` (no fill: the ImageNet mean)."""
    if recipe.dataset == "digit-scenes":
        common = {"size": recipe.img_size, "seed": recipe.seed}
        return "digit-scenes", list(fill), {"train": {**common, "num_images": recipe.scene_images},
                                            "val": {**common, "num_images": recipe.scene_val_images}}
    return recipe.data_dir, None, {"train": {}, "val": {}}


class TaskModelTask(Task):
    """Base of :class:`~.detection.training.DetectionTask` and
    :class:`~.segmentation.training.SegmentationTask`; subclasses set the
    :class:`~.base.Task` identity (``name``, ``models``, ``best_metric``, ``default_recipe``),
    ``collate_fn``, ``model_names`` (for the error) and ``loss_name`` (what they train on), and
    implement the rest of the protocol."""

    #: the built-in digit-scenes, or a folder in ``data_dir`` (COCO or YOLO for detection, VOC
    #: for segmentation)
    datasets = ("digit-scenes", "folder")
    model_names: str = ""
    loss_name: str = ""

    sources = staticmethod(lambda recipe, fill: data_sources(recipe, fill))

    def data_option(self, data: str) -> dict:
        """``digit-scenes`` (generated), else a dataset folder."""
        return {"dataset": "digit-scenes"} if data == "digit-scenes" else {"dataset": "folder", "data_dir": data}

    def check_data(self, data: DataBundle, recipe) -> None:
        if len(data.train) == 0:
            raise DatasetError(f"{recipe.data_dir or recipe.dataset}: the training set has no images")
        if data.num_classes < 2:
            raise DatasetError(f"{recipe.data_dir or recipe.dataset}: fewer than 2 classes (with the background)")

    def check_model(self, recipe) -> None:
        from ..models.registry import get_entry

        if get_entry(recipe.model).task != self.models:
            raise ValueError(f"--task {self.name} needs a {self.models} model ({self.model_names}), "
                             f"got {recipe.model!r}")

    def load_pretrained(self, model: nn.Module, path: str) -> str:
        return f"backbone initialised from {path}"  # done by build_model (it may shape the model)

    def val_batch_size(self, recipe) -> int:
        return recipe.batch_size

    def prepare(self, recipe, num_classes: int, teacher: Optional[nn.Module]) -> None:
        if teacher is not None:
            raise ValueError(f"distillation (--teacher) is for classification; {self.models} trains on "
                             f"{self.loss_name}")
        if recipe.mixup or recipe.cutmix:
            raise ValueError(f"mixup / cutmix are classification augmentations; set them to 0 for "
                             f"{self.models}")
