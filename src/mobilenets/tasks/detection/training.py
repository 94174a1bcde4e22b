"""Training detectors on the library's one training loop (:mod:`mobilenets.train.loop`: exact
resume, DDP, AMP, EMA, progress bars, atomic checkpoints, curves): the ``"detect"`` task.

``mobilenets train --task detect --model ssdlite320_mobilenetv4_conv_small --data digit-scenes``
(or a COCO / YOLO folder). Validation is COCO mAP from torchmetrics' ``MeanAveragePrecision``
with the faster_coco_eval backend (never a hand-written mAP); the best checkpoint is the one
with the highest mAP@[.5:.95].
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ...train.data import DataBundle
from ...train.task import register_task
from ..base import Metric
from ..training import TaskModelTask
from ..data import DigitScenes, detection_collate, detection_transforms, open_detection_data

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


class DetectionTask(TaskModelTask):
    """Object detection: batches of ``(list of images, list of targets)``, the detector's own
    losses (torchvision's: box regression + classification, RPN losses for Faster R-CNN),
    validation mAP / mAP50 / mAP75 and per-class AP."""

    name = "detect"
    best_metric = Metric("map", "mAP")
    default_recipe = "digit_scenes"
    collate_fn = staticmethod(detection_collate)
    models = "detection"
    model_names = "ssdlite320_*, fasterrcnn_*_fpn, retinanet_*_fpn"
    loss_name = "its own losses"
    requires = (("torchmetrics", "detection metrics (COCO mAP)"), ("faster_coco_eval", "detection metrics (COCO mAP)"))

    def fit_recipe(self, base, recipe, size_given: bool):
        return size_for_model(base, recipe, size_given)

    def build_data(self, recipe) -> DataBundle:
        size = recipe.img_size
        spec, fill, per_split = self.sources(recipe, DigitScenes.mean)  # digit-scenes, or a COCO / YOLO folder
        train = open_detection_data(spec, "train", transforms=detection_transforms(True, size, fill=fill),
                                    **per_split["train"])
        val = open_detection_data(spec, "val", transforms=detection_transforms(False, size), **per_split["val"])
        return DataBundle(train, val, _classes(train))

    def build_model(self, recipe, num_classes: int) -> nn.Module:
        """The detector, its backbone initialised from ``recipe.pretrained`` (a classification
        checkpoint, e.g. the digits main job's ``best.pt``) when given."""
        from ...factory import create_model

        self.check_model(recipe)
        kw = {"backbone_kwargs": {"drop_path_rate": recipe.drop_path_rate}} if recipe.drop_path_rate else {}
        return create_model(recipe.model, num_classes=num_classes, pretrained_backbone=recipe.pretrained,
                            **architecture(recipe), **kw)

    def to_device(self, images, targets, device: torch.device, channels_last: bool):
        # channels_last is the model's (its weights): the detector's own transform stacks these
        # CHW images into a batch, and the first channels_last conv makes every map channels_last
        # (a 3-D image has no channels_last layout). Measured: SSDLite-MNv4-Conv-S trains 25 %
        # faster per step on 2 CPU threads.
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                    for k, v in t.items() if k != "masks"} for t in targets]
        return images, targets

    def loss(self, model: nn.Module, images, targets) -> tuple[torch.Tensor, float, int]:
        losses = model(images, targets)
        return sum(losses.values()), 0.0, len(images)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device, num_classes: int, dist,
                 channels_last: bool) -> dict:
        """COCO mAP over the whole (sharded) validation set; ``map``, ``map50``, ``map75`` in
        [0, 1] and ``n`` images (per-class AP: :func:`evaluate_detector`)."""
        res = evaluate_detector(model, loader, device, dist)  # channels_last: the model's weights
        return {k: res[k] for k in ("map", "map50", "map75", "n")}

    def load(self, path, use_ema: bool = True, **options):
        from .infer import load_detector_checkpoint

        return load_detector_checkpoint(path, use_ema)

    def eval_checkpoint(self, path, data, *, batch_size: int = 8, use_ema: bool = True, img_size=None,
                        **options) -> dict:
        from .infer import eval_detector_checkpoint

        return eval_detector_checkpoint(path, data, batch_size=min(batch_size, 16), use_ema=use_ema)

    def eval_report(self, path, data, res: dict) -> list[str]:
        from ...textutil import table

        lines = [f"{path} on {data or 'its validation data'} ({res['n']} images): mAP {res['map']:.4f}  "
                 f"mAP50 {res['map50']:.4f}  mAP75 {res['map75']:.4f}  mAR@100 {res['mar_100']:.4f}"]
        names = res["class_names"]
        rows = [[names[c] if c < len(names) else str(c), f"{ap:.4f}"] for c, ap in sorted(res["per_class"].items())]
        if rows:
            lines.append(table(["class", "AP"], rows, [False, True]))
        return lines

    def predict(self, path, images, *, out_dir=None, use_ema: bool = True, score_thresh: float = 0.5,
                **options) -> list[dict]:
        from .infer import predict_detections

        return predict_detections(path, images, out_dir, score_thresh, use_ema=use_ema)

    def show_prediction(self, r: dict, score_thresh: float = 0.5, **options) -> list[str]:
        n = len(r["detections"])
        if n:
            lines = [f"{r['image']}: {n} detection(s) >= {score_thresh:.2f} -> {r['output']}"]
        else:
            best = r.get("best_score")
            why = (f"best score {best:.2f}; lower --score-thresh to see them" if best is not None
                   else "the model returned none")
            lines = [f"{r['image']}: 0 detections >= {score_thresh:.2f} ({why}) -> {r['output']}"]
        return lines + [f"  {d['score'] * 100:6.2f}%  {d['label']:>8s}  box {d['box']}" for d in r["detections"]]

    def summarize(self, final: dict) -> list[str]:
        f = final
        if "val_map" not in f:
            return []
        return [f"final val mAP {f['val_map']:.4f}  mAP50 {f['val_map50']:.4f}  mAP75 {f['val_map75']:.4f}"
                + (f"  (EMA mAP {f['ema_val_map']:.4f})" if "ema_val_map" in f else "")]

    def describe(self, v: dict, prefix: str = "") -> str:
        return f"{prefix}val mAP {v['map']:.4f} mAP50 {v['map50']:.4f} mAP75 {v['map75']:.4f}"


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


register_task("detect", DetectionTask)
