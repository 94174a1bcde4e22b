"""Registration of the task models: for every classification backbone in the registry, its
detectors ``ssdlite320_<backbone>``, ``fasterrcnn_<backbone>_fpn``,
``fasterrcnn_<backbone>_320_fpn`` and ``retinanet_<backbone>_fpn``, and its segmenters
``lraspp_<backbone>``, ``deeplabv3_<backbone>`` and ``fcn_<backbone>`` (``create_model`` builds
them; ``list_models("ssdlite*")`` / ``list_models(task="detection")`` /
``list_models(task="segmentation")`` lists them).

The builders import torchvision's detection / segmentation modules only when a model is built.
Importing this module also registers the ``"classify"``, ``"detect"`` and ``"segment"`` training tasks.
"""

from __future__ import annotations

import importlib

from ..models.registry import keyword_options, register, task_backbones

# task, name pattern, family, builder (module.function under this package), fixed keywords,
# torchvision's model of the same architecture on MobileNetV3-Large
TASK_MODELS = (
    ("detection", "ssdlite320_{}", "ssdlite", "detection.models.ssdlite320", {}, "ssdlite320_mobilenet_v3_large"),
    ("detection", "fasterrcnn_{}_fpn", "fasterrcnn", "detection.models.fasterrcnn_fpn", {},
     "fasterrcnn_mobilenet_v3_large_fpn"),
    ("detection", "fasterrcnn_{}_320_fpn", "fasterrcnn", "detection.models.fasterrcnn_fpn", {"low_res": True},
     "fasterrcnn_mobilenet_v3_large_320_fpn"),
    ("detection", "retinanet_{}_fpn", "retinanet", "detection.models.retinanet_fpn", {}, None),
    ("segmentation", "lraspp_{}", "lraspp", "segmentation.models.lraspp", {}, "lraspp_mobilenet_v3_large"),
    ("segmentation", "deeplabv3_{}", "deeplabv3", "segmentation.models.deeplabv3", {},
     "deeplabv3_mobilenet_v3_large"),
    ("segmentation", "fcn_{}", "fcn", "segmentation.models.fcn", {},
     "fcn_mobilenet_v3_large (unreleased; assembled from its pieces)"),
)
TORCHVISION_BACKBONE = "mobilenetv3_large_100"


def _register(task: str, pattern: str, family: str, builder: str, fixed: dict, tv_name, backbone: str) -> None:
    module, fn = builder.rsplit(".", 1)

    def build(**kw):
        return getattr(importlib.import_module(f"{__package__}.{module}"), fn)(backbone, **{**fixed, **kw})

    name = pattern.format(backbone)
    build.__doc__ = f"{name}: {family} on {backbone}."
    reference = {"torchvision": tv_name} if tv_name and backbone == TORCHVISION_BACKBONE else {}
    target = getattr(importlib.import_module(f"{__package__}.{module}"), fn)
    register(name, family, build, defaults={"backbone": backbone, **fixed}, reference=reference, task=task,
             options=keyword_options(target))


def register_all() -> None:
    """Register every task model (once; called on import)."""
    for backbone in task_backbones():
        for row in TASK_MODELS:
            _register(*row, backbone)


register_all()

from . import classification as _classification  # noqa: E402,F401  (registers the "classify" task)
from .detection import task as _detection_task  # noqa: E402,F401  (registers the "detect" task)
from .segmentation import task as _segmentation_task  # noqa: E402,F401  (registers "segment")
