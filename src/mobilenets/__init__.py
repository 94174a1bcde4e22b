"""mobilenets: the MobileNet family (V1-V4, Mobile-Former), exact and fast on CPUs.

>>> import mobilenets
>>> mobilenets.list_models("mobilenetv4*")[:2]
['mobilenetv4_conv_aa_large', 'mobilenetv4_conv_aa_medium']
>>> model = mobilenets.create_model("mobilenetv4_conv_small", num_classes=10)
>>> spec = mobilenets.model_spec("mobilenetv4_conv_small")   # str(spec) builds it too

A run of ``mobilenets train`` comes back with ``mobilenets.model_from_checkpoint("runs/<run>/best.pt")``.
"""

from . import zoo  # noqa: F401  (registers every model)
from . import analysis, deploy  # noqa: F401  (mobilenets.analysis.profile, mobilenets.deploy.fuse)
from .tasks import zoo as _task_zoo  # noqa: F401  (registers the detectors)
from .factory import count_params, create_model, stage_shapes
from .models import (FeatureExtractor, MobileFormer, MobileNet, ModelInfo, UnknownModelError, UnknownTagError,
                     get_entry, list_models, list_pretrained, model_info, model_spec)
from .tasks.checkpoint import model_from_checkpoint
from .weights import CheckpointError, load_weights, save_weights

from .version import __version__  # noqa: E402

__all__ = ["CheckpointError", "FeatureExtractor", "MobileFormer", "MobileNet", "ModelInfo", "UnknownModelError",
           "UnknownTagError", "__version__", "count_params", "create_model", "get_entry", "list_models", "list_pretrained",
           "load_weights", "model_from_checkpoint", "model_info", "model_spec", "save_weights", "stage_shapes"]
