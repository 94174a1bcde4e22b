"""Training segmenters on the library's one training loop (:mod:`mobilenets.train.loop`: exact
resume, DDP, AMP, EMA, progress bars, atomic checkpoints, curves): the ``"segment"`` task.

``mobilenets train --task segment --model lraspp_mobilenetv4_conv_small --data digit-scenes``
(or a VOC-style folder). The loss is torchvision's segmentation reference's: cross-entropy over
the pixels (255 ignored) on ``"out"``, plus ``aux_loss_weight`` (0.5) times the same on
``"aux"``. Validation is mIoU from ONE confusion matrix accumulated over the whole (sharded)
validation set (torchmetrics ``MulticlassJaccardIndex``, macro average: classes absent from both
the predictions and the labels are left out, never counted as IoU 0; not torchmetrics'
per-batch ``MeanIoU``), plus pixel accuracy; the best checkpoint is the one with the highest mIoU.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...train.data import DataBundle, DatasetError
from ...train.task import register_task
from ..base import Metric
from ..training import TaskModelTask
from ..data import (IGNORE_INDEX, SceneSegmentation, open_segmentation_data, segmentation_collate,
                    segmentation_transforms)


def segmentation_metrics(num_classes: int):
    """A torchmetrics ``MetricCollection``: ``miou`` (``MulticlassJaccardIndex``, macro over
    the classes present), ``iou`` (per class; NaN where a class is absent from predictions and
    labels) and ``pixel_acc`` (``MulticlassAccuracy``, micro), every one ignoring label 255.
    ``miou`` and ``iou`` share one confusion matrix (torchmetrics' compute groups); under DDP
    torchmetrics sums the states of every rank before computing."""
    from ...extras import require
    MetricCollection = require("torchmetrics", "segmentation metrics (mIoU)").MetricCollection
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex
    common = dict(num_classes=num_classes, ignore_index=IGNORE_INDEX, validate_args=False)
    return MetricCollection({
        "miou": MulticlassJaccardIndex(average="macro", **common),
        "iou": MulticlassJaccardIndex(average="none", zero_division=float("nan"), **common),
        "pixel_acc": MulticlassAccuracy(average="micro", **common)})


def segmentation_loss(out: dict, target: torch.Tensor, aux_weight: float = 0.5) -> torch.Tensor:
    """torchvision's reference criterion: pixel cross-entropy (255 ignored) on ``out``, plus
    ``aux_weight`` times it on ``aux`` when the model has the auxiliary head."""
    loss = F.cross_entropy(out["out"].float(), target, ignore_index=IGNORE_INDEX)
    if "aux" in out:
        loss = loss + aux_weight * F.cross_entropy(out["aux"].float(), target, ignore_index=IGNORE_INDEX)
    return loss


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel: what the segmenters expect of a ``[0, 1]`` image batch
    (the recipe's ``mean`` / ``std``, as the classification transforms normalize)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x)) / self.std.to(x)


class SegmentationTask(TaskModelTask):
    """Semantic segmentation: batches of ``(images (N, 3, H, W) in [0, 1], masks (N, H, W))``,
    torchvision's pixel cross-entropy (+ aux), validation mIoU / pixel accuracy / per-class IoU."""

    name = "segment"
    best_metric = Metric("miou", "mIoU")
    default_recipe = "digit_scenes_seg"
    collate_fn = staticmethod(segmentation_collate)
    models = "segmentation"
    model_names = "lraspp_*, deeplabv3_*, fcn_*"
    loss_name = "its own loss"
    requires = (("torchmetrics", "segmentation metrics (mIoU)"),)

    def build_data(self, recipe) -> DataBundle:
        size = recipe.img_size
        spec, fill, per_split = self.sources(recipe, SceneSegmentation.mean)  # digit-scenes, or a VOC folder
        tf = segmentation_transforms(True, size, fill=fill, crop=recipe.crop_size, scale=tuple(recipe.seg_scale))
        train = open_segmentation_data(spec, "train", transforms=tf, **per_split["train"])
        val = open_segmentation_data(spec, "val", transforms=segmentation_transforms(False, size),
                                     **per_split["val"])
        if list(val.classes) != list(train.classes):
            raise DatasetError(f"{spec}: the train and val splits name different classes "
                               f"({len(train.classes)} vs {len(val.classes)})")
        skipped = sum(sum(getattr(ds, "issues", {}).values()) for ds in (train, val))
        return DataBundle(train, val, list(train.classes), skipped=skipped)

    def build_model(self, recipe, num_classes: int) -> nn.Module:
        """The segmenter, its backbone initialised from ``recipe.pretrained`` (a classification
        checkpoint, e.g. the digits main job's ``best.pt``) when given."""
        from ...factory import create_model

        self.check_model(recipe)
        kw = dict(recipe.model_kwargs)
        if recipe.drop_path_rate:
            kw["backbone_kwargs"] = {**kw.get("backbone_kwargs", {}), "drop_path_rate": recipe.drop_path_rate}
        return create_model(recipe.model, num_classes=num_classes, pretrained_backbone=recipe.pretrained, **kw)

    def prepare(self, recipe, num_classes: int, teacher: Optional[nn.Module]) -> None:
        super().prepare(recipe, num_classes, teacher)
        self.aux_weight = recipe.aux_loss_weight
        self.normalize = Normalize(recipe.mean, recipe.std)

    def to_device(self, x, y, device: torch.device, channels_last: bool):
        x = self.normalize(x.to(device, non_blocking=True))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(device, non_blocking=True)

    def loss(self, model: nn.Module, x, y) -> tuple[torch.Tensor, float, int]:
        return segmentation_loss(model(x), y, self.aux_weight), 0.0, len(x)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device, num_classes: int, dist,
                 channels_last: bool) -> dict:
        """mIoU, pixel accuracy and pixel loss over the whole (sharded) validation set."""
        res = evaluate_segmenter(model, loader, num_classes, self.normalize, device, channels_last, dist)
        return {k: res[k] for k in ("miou", "pixel_acc", "loss", "n")}

    def load(self, path, use_ema: bool = True, **options):
        from .infer import load_segmenter_checkpoint

        return load_segmenter_checkpoint(path, use_ema)

    def eval_checkpoint(self, path, data, *, batch_size: int = 8, use_ema: bool = True, img_size=None,
                        **options) -> dict:
        from .infer import eval_segmenter_checkpoint

        res = eval_segmenter_checkpoint(path, data, batch_size=min(batch_size, 16), use_ema=use_ema,
                                        img_size=img_size)
        return {**res, "img_size": img_size}

    def eval_report(self, path, data, res: dict) -> list[str]:
        from ...textutil import table

        size = res.get("img_size")
        names = res["class_names"]
        rows = [[names[c], "absent" if iou is None else f"{iou:.4f}"] for c, iou in enumerate(res["per_class"])]
        return [f"{path} on {data or 'its validation data'} ({res['n']} images"
                + (f" at {size}px" if size else "") + f"): mIoU {res['miou']:.4f}  pixel accuracy "
                f"{res['pixel_acc']:.4f}  loss {res['loss']:.4f}",
                table(["class", "IoU"], rows, [False, True])]

    def predict(self, path, images, *, out_dir=None, use_ema: bool = True, **options) -> list[dict]:
        from .infer import predict_segmentation

        return predict_segmentation(path, images, out_dir, use_ema=use_ema)

    def show_prediction(self, r: dict, **options) -> list[str]:
        return [f"{r['image']}: " + ", ".join(f"{k} {v * 100:.1f}%" for k, v in r["classes"].items())
                + f" -> {r['output']}"]

    def summarize(self, final: dict) -> list[str]:
        f = final
        if "val_miou" not in f:
            return []
        return [f"final val mIoU {f['val_miou']:.4f}  pixel accuracy {f['val_pixel_acc']:.4f}"
                + (f"  (EMA mIoU {f['ema_val_miou']:.4f})" if "ema_val_miou" in f else "")]

    def describe(self, v: dict, prefix: str = "") -> str:
        return f"{prefix}val mIoU {v['miou']:.4f} pixel acc {v['pixel_acc']:.4f}"


@torch.no_grad()
def evaluate_segmenter(model: nn.Module, loader, num_classes: int, normalize: Optional[nn.Module] = None,
                       device: torch.device = torch.device("cpu"), channels_last: bool = False,
                       dist=None) -> dict:
    """Segmentation metrics of ``model`` on a loader of ``(images in [0, 1], masks)`` batches.

    Returns:
        ``{"miou", "pixel_acc", "loss", "per_class": [IoU or None (absent class)], "n"}`` (floats
        in [0, 1]; ``loss``: cross-entropy per labelled pixel of ``out``).
    """
    from ...train.distributed import all_reduce_sum

    was = model.training
    model.eval()
    metrics = segmentation_metrics(num_classes).to(device)
    sums = torch.zeros(3, dtype=torch.float64)  # loss * pixels, labelled pixels, images
    try:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            if normalize is not None:
                x = normalize(x)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = model(x)["out"].float()
            labelled = int((y != IGNORE_INDEX).sum())
            if labelled:
                sums[0] += F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum").item()
            sums[1] += labelled
            sums[2] += len(x)
            metrics.update(logits.argmax(1), y)
        out = metrics.compute()
    finally:
        model.train(was)
    if dist is not None and getattr(dist, "enabled", False):  # pragma: no cover - DDP only
        all_reduce_sum(sums, dist)
    per_class = [None if v != v else float(v) for v in out["iou"].tolist()]
    return {"miou": float(out["miou"]), "pixel_acc": float(out["pixel_acc"]),
            "loss": sums[0].item() / max(1.0, sums[1].item()), "per_class": per_class, "n": int(sums[2].item())}


register_task("segment", SegmentationTask)
