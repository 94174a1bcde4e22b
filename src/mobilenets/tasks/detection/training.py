"""Training detectors on the library's one training loop (:mod:`mobilenets.train.loop`: exact
resume, DDP, AMP, EMA, progress bars, atomic checkpoints, curves): the ``"detect"`` task.

``mobilenets train --task detect --model ssdlite320_mobilenetv4_conv_small --data digit-scenes``
(or a COCO / YOLO folder). Validation is COCO mAP from torchmetrics' ``MeanAveragePrecision``
with the faster_coco_eval backend (never a hand-written mAP); the best checkpoint is the one
with the highest mAP@[.5:.95].
"""

from __future__ import annotations


import torch
import torch.nn as nn

from ...data import DataBundle
from ..training import data_sources
from ...data import DigitScenes, detection_transforms, open_detection_data

BACKGROUND = "__background__"


def _classes(ds) -> list[str]:
    """The dataset's class names with the background first (torchvision's label 0)."""
    names = list(getattr(ds, "classes", []) or [])
    return names if names and names[0] == BACKGROUND else [BACKGROUND] + names


def architecture(recipe) -> dict:
    """The builder options that shape a trained detector: the recipe's ``model_kwargs`` and what
    torchvision derives from whether backbone weights were given (SSDLite's MobileNetV3
    ``reduced_tail``: reduced only when training from scratch). Passing them explicitly rebuilds
    the same architecture for inference without the backbone checkpoint."""
    from ...models.registry import get_entry

    entry = get_entry(recipe.model)
    backbone = entry.defaults.get("backbone")
    arch = dict(recipe.model_kwargs)
    if entry.family == "ssdlite" and backbone and get_entry(backbone).family == "mobilenetv3":
        arch.setdefault("reduced_tail", recipe.pretrained is None)
    return arch


def size_for_model(base, recipe, size_given: bool = False):
    """``recipe`` (the named recipe ``base`` with the user's changes) with ``img_size`` following
    its model: a detection recipe sized for its own model (``img_size`` = that model's
    :func:`~.models.native_size`: ``fasterrcnn``'s 800, ``ssdlite``'s and ``digit_scenes``' 320)
    trains another model at *that* model's size, e.g. ``--recipe fasterrcnn --model
    fasterrcnn_<backbone>_320_fpn`` at 320, not at 800 px only to be resized to 320 inside the
    model. Unchanged when the user gave the size (``size_given``), the recipe is not sized for its
    model, or the task is not detection."""
    from .models import native_size

    if size_given or recipe.task != "detect" or base.task != "detect":
        return recipe
    try:
        own = native_size(base.model, base.model_kwargs)
        new = native_size(recipe.model, recipe.model_kwargs)
    except (KeyError, ValueError):  # not a detector: check_model names the problem when training starts
        return recipe
    if base.img_size != own or recipe.img_size != base.img_size or new == own:
        return recipe
    return recipe.replace(img_size=new)


def detection_data(recipe) -> DataBundle:
    """The training and validation sets of a detection recipe: digit-scenes generated at the
    training size, or a COCO / YOLO folder; classes with the background first."""
    size = recipe.img_size
    spec, fill, per_split = data_sources(recipe, DigitScenes.mean)  # digit-scenes, or a COCO / YOLO folder
    train = open_detection_data(spec, "train", transforms=detection_transforms(True, size, fill=fill),
                                **per_split["train"])
    val = open_detection_data(spec, "val", transforms=detection_transforms(False, size), **per_split["val"])
    return DataBundle(train, val, _classes(train))


def mean_average_precision(class_metrics: bool = True):
    """torchmetrics' ``MeanAveragePrecision`` (boxes, xyxy) with the faster_coco_eval backend
    (pycocotools' backend returns -1 for non-default ``max_detection_thresholds``; torchmetrics' MeanAveragePrecision documentation)."""
    from ...extras import require
    require("faster_coco_eval", "detection metrics (COCO mAP)")
    MeanAveragePrecision = require("torchmetrics.detection", "detection metrics (COCO mAP)").MeanAveragePrecision
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=class_metrics,
                                  backend="faster_coco_eval")
    metric.warn_on_many_detections = False  # COCO's AP reads the top 100 per image, as intended
    return metric


@torch.no_grad()
def evaluate_detector(model: nn.Module, loader, device: torch.device = torch.device("cpu"), dist=None) -> dict:
    """COCO metrics of ``model`` on a loader of ``(images, targets)`` batches (a channels_last
    model needs nothing more: its weights carry the format, see ``DetectionTask.to_device``).

    Returns:
        ``{"map", "map50", "map75", "map_small", "map_medium", "map_large", "mar_100",
        "per_class": {label: AP}, "n": images}`` (floats in [0, 1]; -1 where COCO has no
        instance of that kind). Under DDP torchmetrics gathers every rank's detections.
    """
    was = model.training
    model.eval()
    metric = mean_average_precision().to(device)
    n = 0
    try:
        for images, targets in loader:
            images = [im.to(device) for im in images]
            preds = model(images)
            metric.update([{k: p[k].float() if k != "labels" else p[k] for k in ("boxes", "scores", "labels")}
                           for p in preds],
                          [{"boxes": t["boxes"].to(device).float(), "labels": t["labels"].to(device)}
                           for t in targets])
            n += len(images)
        out = metric.compute()
    finally:
        model.train(was)
    classes = out.get("classes")
    per_class = {}
    if classes is not None and out.get("map_per_class") is not None:
        cl = classes.reshape(-1).tolist()
        ap = out["map_per_class"].reshape(-1).tolist()
        per_class = dict(zip(cl, ap))
    res = {k: float(out[k]) for k in ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100")}
    res["map50"], res["map75"] = res.pop("map_50"), res.pop("map_75")
    res["per_class"] = per_class
    total = torch.tensor([float(n)])
    if dist is not None and getattr(dist, "enabled", False):  # pragma: no cover - DDP only
        torch.distributed.all_reduce(total)
    res["n"] = int(total.item())
    return res
