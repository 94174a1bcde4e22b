"""Training: datasets and transforms, recipes (optimizers, schedules, EMA), the loop
(single process or torchrun/DDP), distillation, evaluation and prediction.

>>> from mobilenets.train import get_recipe, train
>>> result = train(get_recipe("digits"), "runs/digits")     # doctest: +SKIP
"""

from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from ..data.classification import DatasetError, build_datasets, stratified_split
from .distill import TeacherError, distill_loss, kd_loss, load_teacher
from .loop import TrainingError, TrainResult, train
from .ema import ModelEma, average_state_dicts
from .optim import LRSchedule, create_optimizer, param_groups, tf_to_torch_eps
from .recipe import Recipe, apply_overrides
from .recipes import RECIPES, get_recipe

__all__ = ["DatasetError", "LRSchedule", "ModelEma", "RECIPES", "Recipe", "TeacherError", "TrainResult",
           "TrainingError", "apply_overrides", "average_state_dicts", "build_datasets", "create_optimizer",
           "distill_loss", "get_recipe", "kd_loss", "load_checkpoint", "load_teacher",
           "model_from_checkpoint", "param_groups", "save_checkpoint", "stratified_split", "tf_to_torch_eps",
           "train"]
