"""Image classification: the :class:`~.task.ClassificationTask` the training engine runs,
top-1 / top-5 evaluation (:mod:`.evaluate`) and checkpoint evaluation / prediction
(:mod:`.infer`). Importing it registers the ``"classify"`` task."""

from .evaluate import evaluate
from .task import ClassificationTask, build_criterion

__all__ = ["ClassificationTask", "build_criterion", "evaluate"]
