"""``yolo()``: an ``ultralytics.YOLO`` with our backbone and YOLO11's neck and head."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional

from .backbone import backbone_entry, check_width
from .hook import register, ultralytics_tasks
from .layout import SCALES, yaml_name, yaml_text


def yolo(scale: str = "n", backbone: str = "mobilenetv4_conv_small", width: float = 0.75, nc: int = 80,
         *, pretrained_backbone: Any = None, verbose: bool = False, **backbone_kwargs):
    """YOLO11 (scale ``n``/``s``/``m``/``l``/``x``: its neck and head) on a registry backbone.

    The model is what ``ultralytics.YOLO("<its YAML>")`` builds after :func:`register` (the same
    YAML as the shipped files, :func:`~.layout.yaml_text`), so everything Ultralytics offers
    works on it: ``info()``, ``train()``, ``val()``, ``predict()``, ``export()``, ``save()``.
    ``train()`` starts from this model's weights (as after ``YOLO.load``), so a
    ``pretrained_backbone`` is trained from, not re-initialised; ``train(pretrained=False)``
    starts from scratch.

    Args:
        scale: YOLO11's scale of the neck and head.
        backbone: a classification backbone of the registry (``mobilenets.list_models(
            task="classification")``).
        width: backbone width factor in (0, 2], through ``width_mult`` (multiples of 8; see
            :class:`~.backbone.MobileNetBackbone`).
        nc: number of classes.
        pretrained_backbone: a classification checkpoint of the same backbone (ours, such as
            ``mobilenets train``'s ``best.pt``, or timm's / torchvision's layout; any classifier)
            loaded into the backbone, every backbone weight checked.
        verbose: print Ultralytics' layer table and summary while building.
        **backbone_kwargs: options of the backbone (``drop_path_rate``, family options ...);
            they are written into the model's YAML (Ultralytics rebuilds from it).

    Returns:
        ``ultralytics.YOLO``.

    Raises:
        UnknownModelError: unknown backbone (with the closest names). ValueError: width outside
        (0, 2], a scale not in n/s/m/l/x, a backbone without a stride-32 level. ImportError:
        Ultralytics missing (``pip install 'mobilenets[yolo]'``) or too old.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)} (YOLO11n ... YOLO11x), got {scale!r}")
    backbone_entry(backbone)
    check_width(width)
    register()
    from ultralytics import YOLO

    name = yaml_name(scale, backbone, width)
    text = yaml_text(scale, backbone, width, nc, backbone_kwargs or None)
    with tempfile.TemporaryDirectory(prefix="mobilenets-yolo-") as tmp:
        path = Path(tmp) / name   # Ultralytics builds from a file and reads the scale from its name
        path.write_text(text, encoding="utf-8")
        model = YOLO(str(path), task="detect", verbose=verbose)
    # the file is gone: what Ultralytics keeps is the dict (model.yaml); name it without the folder
    model.model.yaml["yaml_file"] = name
    model.cfg = model.overrides["model"] = model.model_name = name
    if pretrained_backbone is not None:
        backbone_of(model).load_pretrained(pretrained_backbone)
    # Model.load's contract: with a checkpoint set, train() seeds the trainer's model from this one
    model.ckpt = {"model": model.model}
    return model


def backbone_of(model):
    """The :class:`~.backbone.MobileNetBackbone` of a YOLO model (``ultralytics.YOLO`` or its
    ``DetectionModel``)."""
    from .backbone import MobileNetBackbone

    found = [m for m in _detection_model(model).modules() if isinstance(m, MobileNetBackbone)]
    if len(found) != 1:
        raise ValueError(f"expected a YOLO model with one MobileNetBackbone, found {len(found)}")
    return found[0]


def build_detection_model(scale: str, d: dict, name: Optional[str] = None, verbose: bool = False):
    """Ultralytics' ``DetectionModel`` of the model dict ``d`` at ``scale`` (what
    ``YOLO(yaml)`` builds, without the file)."""
    tasks = ultralytics_tasks()
    register()
    d = dict(d, scale=scale, yaml_file=name or yaml_name(scale, d["backbone"][0][3][0]))
    return tasks.DetectionModel(d, ch=3, nc=d["nc"], verbose=verbose)


def _detection_model(model):
    from ultralytics.engine.model import Model

    return model.model if isinstance(model, Model) else model


def model_info(model, imgsz: int = 640) -> tuple[tuple[int, int, int, float], str]:
    """Ultralytics' ``model_info`` of a YOLO model (``ultralytics.YOLO`` or ``DetectionModel``):
    ``((layers, parameters, gradients, GFLOPs at imgsz), the summary line it logs)``, captured
    instead of printed."""
    import logging

    from ultralytics.utils import LOGGER
    from ultralytics.utils.torch_utils import model_info as info

    net = _detection_model(model)
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    saved = LOGGER.handlers[:], LOGGER.propagate, LOGGER.level
    LOGGER.handlers[:] = [Capture()]
    LOGGER.propagate = False
    LOGGER.setLevel(logging.INFO)   # also under YOLO_VERBOSE=False
    try:
        numbers = info(net, verbose=True, imgsz=imgsz)
    finally:
        LOGGER.handlers[:], LOGGER.propagate = saved[0], saved[1]
        LOGGER.setLevel(saved[2])
    return numbers, next((line for line in lines if " summary" in line), "")


def summary_line(model, imgsz: int = 640) -> str:
    """Ultralytics' summary line of a model, as ``model.info()`` prints it (``YOLO11n-... summary:
    N layers, N parameters, N gradients, N GFLOPs``)."""
    return model_info(model, imgsz)[1]
