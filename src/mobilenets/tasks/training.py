"""What the task models' training tasks (``"detect"``, ``"segment"``) share on the library's one
training loop: where their data come from (the built-in digit-scenes at the training size, or a
folder), the checks before any step, and the classification-only options they refuse."""

from __future__ import annotations

from typing import Optional

import torch.nn as nn

from ..train.data import DataBundle, DatasetError


class TaskModelTask:
    """Base of :class:`~.detection.training.DetectionTask` and
    :class:`~.segmentation.training.SegmentationTask`; subclasses set ``name``, ``metric``,
    ``collate_fn``, ``registry_task`` (the registry's task of their models), ``model_names``
    (for the error) and ``loss_name`` (what they train on), and implement the rest of the
    :class:`mobilenets.train.task.ClassificationTask` protocol."""

    registry_task: str = ""
    model_names: str = ""
    loss_name: str = ""

    @staticmethod
    def sources(recipe, fill) -> tuple[str, Optional[list], dict]:
        """``(spec, fill, per-split options)``: ``"digit-scenes"`` generated at the training size
        with the recipe's counts and seed (``fill``: the scenes' mean, for padding), or the folder
        in ``data_dir`` (no fill: the ImageNet mean)."""
        if recipe.dataset == "digit-scenes":
            common = {"size": recipe.img_size, "seed": recipe.seed}
            return "digit-scenes", list(fill), {"train": {**common, "num_images": recipe.scene_images},
                                                "val": {**common, "num_images": recipe.scene_val_images}}
        return recipe.data_dir, None, {"train": {}, "val": {}}

    def check_data(self, data: DataBundle, recipe) -> None:
        if len(data.train) == 0:
            raise DatasetError(f"{recipe.data_dir or recipe.dataset}: the training set has no images")
        if data.num_classes < 2:
            raise DatasetError(f"{recipe.data_dir or recipe.dataset}: fewer than 2 classes (with the background)")

    def check_model(self, recipe) -> None:
        from ..models.registry import get_entry

        if get_entry(recipe.model).task != self.registry_task:
            raise ValueError(f"--task {self.name} needs a {self.registry_task} model ({self.model_names}), "
                             f"got {recipe.model!r}")

    def load_pretrained(self, model: nn.Module, path: str) -> str:
        return f"backbone initialised from {path}"  # done by build_model (it may shape the model)

    def val_batch_size(self, recipe) -> int:
        return recipe.batch_size

    def prepare(self, recipe, num_classes: int, teacher: Optional[nn.Module]) -> None:
        if teacher is not None:
            raise ValueError(f"distillation (--teacher) is for classification; {self.registry_task} trains on "
                             f"{self.loss_name}")
        if recipe.mixup or recipe.cutmix:
            raise ValueError(f"mixup / cutmix are classification augmentations; set them to 0 for "
                             f"{self.registry_task}")
