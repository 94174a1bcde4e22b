"""Training: datasets and transforms, recipes (optimizers, schedules, EMA), the loop
(single process or torchrun/DDP), distillation, evaluation and prediction.

>>> from mobilenets.train import get_recipe, train
>>> result = train(get_recipe("digits"), "runs/digits")     # doctest: +SKIP
"""

from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from .data import DatasetError, build_datasets, stratified_split
from .distill import TeacherError, distill_loss, kd_loss, load_teacher
from .loop import TrainingError, TrainResult, train
from .recipe import (RECIPES, LRSchedule, ModelEma, Recipe, apply_overrides, average_state_dicts,
                     create_optimizer, get_recipe, param_groups, tf_to_torch_eps)

__all__ = ["DatasetError", "LRSchedule", "ModelEma", "RECIPES", "Recipe", "TeacherError", "TrainResult",
           "TrainingError", "apply_overrides", "average_state_dicts", "build_datasets", "create_optimizer",
           "distill_loss", "get_recipe", "kd_loss", "load_checkpoint", "load_teacher",
           "model_from_checkpoint", "param_groups", "save_checkpoint", "stratified_split", "tf_to_torch_eps",
           "train"]
