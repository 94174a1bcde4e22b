"""The ``"segment"`` :class:`~mobilenets.tasks.base.Task`: segmenters on the library's one training loop (pixel loss, mIoU, checkpoints, prediction); registered when imported."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ...data import DataBundle
from ...train.task import register_task
from ..base import Metric
from ..training import TaskModelTask
from ...data import segmentation_collate
from .training import Normalize, evaluate_segmenter, segmentation_data, segmentation_loss


class SegmentationTask(TaskModelTask):
    """Semantic segmentation: batches of ``(images (N, 3, H, W) in [0, 1], masks (N, H, W))``,
    torchvision's pixel cross-entropy (+ aux), validation mIoU / pixel accuracy / per-class IoU."""

    plural = "segmenters"
    name = "segment"
    best_metric = Metric("miou", "mIoU")
    summary_metrics = (Metric("pixel_acc", "pixel accuracy"),)
    default_recipe = "digit_scenes_seg"
    collate_fn = staticmethod(segmentation_collate)
    models = "segmentation"
    model_names = "lraspp_*, deeplabv3_*, fcn_*"
    loss_name = "its own loss"
    requires = (("torchmetrics", "segmentation metrics (mIoU)"),)

    def build_data(self, recipe) -> DataBundle:
        return segmentation_data(recipe)

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

    #: ONNX keeps ``out`` (and ``aux``) by name; a mobile file returns the ``out`` logits; INT8 is
    #: PT2E for the mobile runtimes (ONNX Runtime's QDQ quantizer is set up for classifiers)
    int8_formats = ("executorch", "tflite")

    def load(self, path, use_ema: bool = True, **options):
        from .infer import load_segmenter_checkpoint

        return load_segmenter_checkpoint(path, use_ema)

    def eval_checkpoint(self, path, data, *, batch_size: int = 8, use_ema: bool = True, img_size=None,
                        **options) -> dict:
        from .infer import eval_segmenter_checkpoint

        if options.get("file"):
            raise ValueError("eval --file (an exported file run in its runtime) is for classifiers and SSD detectors; "
                             "a segmenter's file is checked against eager at export (mobilenets export)")
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

    def describe(self, v: dict, prefix: str = "") -> str:
        return f"{prefix}val mIoU {v['miou']:.4f} pixel acc {v['pixel_acc']:.4f}"


register_task("segment", SegmentationTask)
