"""The ``"detect"`` :class:`~mobilenets.tasks.base.Task`: detectors on the library's one training loop (loss, COCO mAP, checkpoints, prediction); registered when imported."""

from __future__ import annotations


import torch
import torch.nn as nn

from ...data import DataBundle
from ...train.task import register_task
from ..base import Exported, Metric
from ..training import TaskModelTask
from ...data import detection_collate
from .training import architecture, detection_data, evaluate_detector, size_for_model


class DetectionTask(TaskModelTask):
    """Object detection: batches of ``(list of images, list of targets)``, the detector's own
    losses (torchvision's: box regression + classification, RPN losses for Faster R-CNN),
    validation mAP / mAP50 / mAP75 and per-class AP."""

    plural = "detectors"
    export_why = "decode + NMS in the graph"
    name = "detect"
    best_metric = Metric("map", "mAP")
    summary_metrics = (Metric("map50", "mAP50"), Metric("map75", "mAP75"))
    default_recipe = "digit_scenes"
    collate_fn = staticmethod(detection_collate)
    models = "detection"
    model_names = "ssdlite320_*, fasterrcnn_*_fpn, retinanet_*_fpn"
    loss_name = "its own losses"
    requires = (("torchmetrics", "detection metrics (COCO mAP)"), ("faster_coco_eval", "detection metrics (COCO mAP)"))

    def fit_recipe(self, base, recipe, size_given: bool):
        return size_for_model(base, recipe, size_given)

    def build_data(self, recipe) -> DataBundle:
        return detection_data(recipe)

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

    #: ONNX: one fp32 image at a time, decode + NMS in the graph. ExecuTorch / LiteRT (SSD only, fp32
    #: or INT8): the network's raw outputs, decode + NMS on the host (the mobile runtimes take no
    #: NMS; :class:`~mobilenets.tasks.detection.mobile.MobileDetector` runs such a file)
    export_formats = ("onnx", "executorch", "tflite")
    int8_formats = ("executorch", "tflite")

    def calibration(self, source, model: nn.Module, input_size, count: int = 128):
        """Calibration for an SSD's network file: ``digit-scenes``, ``fake`` or an image folder, each
        image through the detector's own transform
        (:func:`~mobilenets.tasks.detection.mobile.detection_calibration`)."""
        from .mobile import detection_calibration

        return detection_calibration(source, model, count)

    def export_module(self, model: nn.Module) -> nn.Module:
        """One ``(3, H, W)`` image in [0, 1] -> ``boxes``, ``labels``, ``scores`` (post-processing
        included: :class:`~mobilenets.tasks.detection.export.DetectionOutputs`)."""
        from .export import DetectionOutputs

        return DetectionOutputs(model)

    def export(self, model, fmt, path, input_size, *, calib=None, opset: int = 17, dynamic_batch: bool = False,
               allow_fallback: bool = False, float_layers: tuple = (), calib_method=None) -> Exported:
        """ONNX with the post-processing in the graph, checked detection by detection in ONNX
        Runtime (:func:`~mobilenets.tasks.detection.export.export_detector_onnx`: its own
        verification, boxes within 1e-3 px)."""
        from .export import export_detector_onnx

        self.check_export(fmt, calib is not None, dynamic_batch)
        if float_layers:
            raise ValueError("float layers (mixed precision) are for INT8 classifier exports to executorch or "
                             "tflite; not for detectors")
        if dynamic_batch:
            raise ValueError("detectors export one image at a time (decode + NMS in the graph): drop --dynamic-batch")
        if fmt != "onnx":
            return self._export_network(model, fmt, path, input_size, calib, allow_fallback, calib_method)
        path = export_detector_onnx(model, path, input_size=input_size, opset=opset)
        return Exported(path, f"image 3x{input_size[0]}x{input_size[1]} in [0, 1]",
                        "fp32, BatchNorm folded, decode + NMS in the graph",
                        f"opset {opset}; checked with ONNX Runtime (boxes within 1e-3 px)", normalized=False)

    @staticmethod
    def _export_network(model, fmt, path, input_size, calib, allow_fallback, calib_method=None) -> Exported:
        """An SSD's network (raw box regressions and class logits) for ExecuTorch / LiteRT
        (:func:`~mobilenets.tasks.detection.mobile.export_ssd_network`) at the size its transform
        resizes every image to (``input_size``, the image size, does not change it); ``calib``:
        images through the detector's transform (:meth:`calibration`) for INT8."""
        from .mobile import export_ssd_network

        # the network takes the transform's output, whatever size the images have (input_size is
        # the image size for ONNX, whose graph holds the transform)
        res = export_ssd_network(model, path, fmt, calib, allow_fallback=allow_fallback, calib_method=calib_method)
        t = model.transform
        mean, std = (", ".join(f"{v:g}" for v in x) for x in (t.image_mean, t.image_std))
        shape = "x".join(str(s) for s in res.input_shape)
        ranges = f", {res.calib_method} ranges" if res.calib_method else ""
        kind = f"INT8 (PT2E static, per-channel weights{ranges})" if calib is not None else "fp32, BatchNorm folded"
        return Exported(res.path, f"{shape} (the image resized to {t.fixed_size[0]}x{t.fixed_size[1]}, normalized with "
                        f"mean {mean} std {std}); outputs bbox_regression, cls_logits (decode + NMS on the host: "
                        "mobilenets.tasks.detection.mobile.MobileDetector)", kind, res.summary(), normalized=False)

    def load(self, path, use_ema: bool = True, **options):
        from .infer import load_detector_checkpoint

        return load_detector_checkpoint(path, use_ema)

    def eval_checkpoint(self, path, data, *, batch_size: int = 8, use_ema: bool = True, img_size=None,
                        **options) -> dict:
        from .infer import eval_detector_checkpoint

        return eval_detector_checkpoint(path, data, batch_size=min(batch_size, 16), use_ema=use_ema,
                                        file=options.get("file"))

    def eval_report(self, path, data, res: dict) -> list[str]:
        from ...textutil import table

        what = f"{res['file']} ({res['runtime']}, exported from {path})" if res.get("file") else path
        lines = [f"{what} on {data or 'its validation data'} ({res['n']} images): mAP {res['map']:.4f}  "
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

    def describe(self, v: dict, prefix: str = "") -> str:
        return f"{prefix}val mAP {v['map']:.4f} mAP50 {v['map50']:.4f} mAP75 {v['map75']:.4f}"


register_task("detect", DetectionTask)
