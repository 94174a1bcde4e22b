"""MobileNet backbones inside Ultralytics YOLO11, with Ultralytics' source left as it is.

>>> from mobilenets.integrations.ultralytics import yolo, register
>>> model = yolo("n", backbone="mobilenetv4_conv_small", width=0.75, nc=10)   # an ultralytics.YOLO
>>> register()   # then YAML files naming MobileNetBackbone build with ultralytics.YOLO("x.yaml")

- :func:`yolo`: YOLO11 n/s/m/l/x (its neck and head) on any registry classification backbone at
  any width factor in (0, 2] (through ``width_mult``), optionally from a classification checkpoint.
- :func:`register`: makes ``MobileNetBackbone`` (and the widely copied tutorial's
  ``MobileNetV4ConvSmall`` ... names) known to Ultralytics' YAML parser; the tutorial layout
  (the backbone row is layer 0 and stands for layers 0-4) builds as it is (:mod:`.hook`).
  :func:`yolo` and :func:`yaml_path` register by themselves, and so does importing this package
  when Ultralytics is already imported; ``ultralytics.YOLO("your.yaml")`` in a process that did
  none of these needs ``register()`` first (else Ultralytics' ``KeyError: 'MobileNetBackbone'``).
- :func:`yaml_path` / :func:`shipped_yamls`: the generated YAMLs shipped in the package
  (YOLO11 n..x on the five MobileNetV4 models, MobileNetV3-Large, Mobile-Former-294M);
  :func:`yaml_text` / :func:`write_yamls` make them (:mod:`.layout`).

Ultralytics is AGPL-3.0 and an optional extra (``pip install 'mobilenets[yolo]'``): it is
imported inside functions only, so importing this module (or unpickling a saved YOLO model's
backbone) does not import it, and the core package never imports this module.
"""

from .backbone import (HEAD_STRIDES, LEVEL_STRIDES, MODULES, TUTORIAL_NAMES, MobileNetBackbone, backbone_entry,
                       check_width, width_mult_of)
from .hook import MIN_VERSION, expand_layout, is_registered, register, ultralytics_tasks, unregister
from .layout import (SCALES, SHIPPED_BACKBONES, model_dict, shipped_yamls, write_yamls, yaml_name, yaml_path,
                     yaml_text)
from .model import backbone_of, build_detection_model, model_info, summary_line, yolo


def _register_if_ultralytics_imported() -> None:
    """Ultralytics already imported by the user: make our YAML names known now (never importing
    Ultralytics when it is not: the package imports without it; an Ultralytics too old for the
    hook is reported by register() / yolo() when called, not by this import)."""
    import sys

    if sys.modules.get("ultralytics") is not None:
        from .hook import register_if_installed
        try:
            register_if_installed()
        except ImportError:
            pass


_register_if_ultralytics_imported()

__all__ = ["HEAD_STRIDES", "LEVEL_STRIDES", "MIN_VERSION", "MODULES", "MobileNetBackbone", "SCALES",
           "SHIPPED_BACKBONES", "TUTORIAL_NAMES", "backbone_entry", "backbone_of", "build_detection_model",
           "check_width", "expand_layout", "is_registered", "model_dict", "model_info", "register", "shipped_yamls",
           "summary_line", "ultralytics_tasks", "unregister", "width_mult_of", "write_yamls", "yaml_name",
           "yaml_path", "yaml_text", "yolo"]
