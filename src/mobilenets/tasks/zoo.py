"""Registration of the task models: for every classification backbone in the registry, its
detectors ``ssdlite320_<backbone>``, ``fasterrcnn_<backbone>_fpn``,
``fasterrcnn_<backbone>_320_fpn`` and ``retinanet_<backbone>_fpn`` (``create_model`` builds
them; ``list_models("ssdlite*")`` / ``list_models(task="detection")`` lists them).

The builders import torchvision's detection modules only when a model is built. Importing this
module also registers the ``"detect"`` training task (:mod:`.detection.training`).
"""

from __future__ import annotations

from ..models.registry import list_models, register

# name pattern, detector family, builder name in .detection.models, fixed keywords, torchvision's
# model of the same architecture on MobileNetV3-Large
DETECTORS = (
    ("ssdlite320_{}", "ssdlite", "ssdlite320", {}, "ssdlite320_mobilenet_v3_large"),
    ("fasterrcnn_{}_fpn", "fasterrcnn", "fasterrcnn_fpn", {}, "fasterrcnn_mobilenet_v3_large_fpn"),
    ("fasterrcnn_{}_320_fpn", "fasterrcnn", "fasterrcnn_fpn", {"low_res": True},
     "fasterrcnn_mobilenet_v3_large_320_fpn"),
    ("retinanet_{}_fpn", "retinanet", "retinanet_fpn", {}, None),
)
TORCHVISION_BACKBONE = "mobilenetv3_large_100"


def _register_detector(pattern: str, family: str, builder: str, fixed: dict, tv_name, backbone: str) -> None:
    def build(**kw):
        from .detection import models

        return getattr(models, builder)(backbone, **{**fixed, **kw})

    name = pattern.format(backbone)
    build.__doc__ = f"{name}: {family} on {backbone}."
    reference = {"torchvision": tv_name} if tv_name and backbone == TORCHVISION_BACKBONE else {}
    register(name, family, build, defaults={"backbone": backbone, **fixed}, reference=reference,
             task="detection")


def register_all() -> None:
    """Register every detector (once; called on import)."""
    for backbone in list_models(task="classification"):
        for row in DETECTORS:
            _register_detector(*row, backbone)


register_all()

from .detection import training as _training  # noqa: E402,F401  (registers the "detect" training task)
