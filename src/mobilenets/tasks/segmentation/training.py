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

from ...data import DataBundle, DatasetError
from ..training import data_sources
from ...data import IGNORE_INDEX, SceneSegmentation, open_segmentation_data, segmentation_transforms


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


def segmentation_data(recipe) -> DataBundle:
    """The training and validation sets of a segmentation recipe: digit-scenes generated at
    the training size, or a VOC folder."""
    size = recipe.img_size
    spec, fill, per_split = data_sources(recipe, SceneSegmentation.mean)  # digit-scenes, or a VOC folder
    tf = segmentation_transforms(True, size, fill=fill, crop=recipe.crop_size, scale=tuple(recipe.seg_scale))
    train = open_segmentation_data(spec, "train", transforms=tf, **per_split["train"])
    val = open_segmentation_data(spec, "val", transforms=segmentation_transforms(False, size),
                                 **per_split["val"])
    if list(val.classes) != list(train.classes):
        raise DatasetError(f"{spec}: the train and val splits name different classes "
                           f"({len(train.classes)} vs {len(val.classes)})")
    skipped = sum(sum(getattr(ds, "issues", {}).values()) for ds in (train, val))
    return DataBundle(train, val, list(train.classes), skipped=skipped)


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
