"""A trained detector from its checkpoint: evaluation (COCO mAP, per-class AP) and predictions
drawn on images (``mobilenets eval`` / ``mobilenets predict`` on a detection checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from ..checkpoint import checkpoint_task, load_task_checkpoint, read_image, save_drawn
from .convert import load_detector_weights
from .training import DetectionTask, architecture, evaluate_detector

PathLike = Union[str, Path]


def is_detection_checkpoint(path: PathLike) -> bool:
    """Whether a training checkpoint was written by a ``--task detect`` run."""
    return checkpoint_task(path) == "detect"


def load_detector_checkpoint(path: PathLike, use_ema: bool = True) -> tuple[nn.Module, dict]:
    """``(detector in eval mode, info)`` from a ``mobilenets train --task detect`` checkpoint;
    ``info``: ``recipe`` (a :class:`~mobilenets.train.recipe.Recipe`), ``classes`` (background
    first), ``epoch``, ``best``. The backbone checkpoint the run started from is not needed."""
    return load_task_checkpoint(path, "detect", architecture, load_detector_weights, use_ema)


def eval_detector_checkpoint(path: PathLike, data: Optional[str] = None, batch_size: int = 8,
                             use_ema: bool = True) -> dict:
    """COCO metrics of a detection checkpoint on ``data`` (default: the run's validation data:
    ``digit-scenes`` or its folder; or another COCO / YOLO folder with the same classes)."""
    model, info = load_detector_checkpoint(path, use_ema)
    r = info["recipe"]
    if data:
        r = r.replace(dataset="digit-scenes", data_dir=None) if data == "digit-scenes" else \
            r.replace(dataset="folder", data_dir=data)
    bundle = DetectionTask().build_data(r)
    if bundle.num_classes != len(info["classes"]):
        raise ValueError(f"{data or r.dataset} has {bundle.num_classes - 1} object classes but the checkpoint "
                         f"detects {len(info['classes']) - 1}")
    loader = torch.utils.data.DataLoader(bundle.val, batch_size=batch_size, shuffle=False,
                                         collate_fn=DetectionTask.collate_fn)
    res = evaluate_detector(model, loader)
    res["class_names"] = info["classes"]
    return res


@torch.no_grad()
def predict_detections(path: PathLike, images: Sequence[PathLike], out_dir: Optional[PathLike] = None,
                       score_thresh: float = 0.5, use_ema: bool = True) -> list[dict]:
    """Detect objects in image files and write each image with its boxes drawn
    (``torchvision.utils.draw_bounding_boxes``) as ``<out_dir>/<stem>_detections.png``.

    Returns one dict per image: ``image``, ``output`` (the PNG), ``detections`` (``label`` name,
    ``score``, ``box`` xyxy pixels of the original image).
    """
    from torchvision.transforms.v2 import functional as F
    from torchvision.utils import draw_bounding_boxes

    model, info = load_detector_checkpoint(path, use_ema)
    size = info["recipe"].img_size
    names = info["classes"]
    results = []
    for img_path in images:
        img = read_image(img_path)
        h, w = img.shape[1:]
        x = F.resize(img, [size, size], antialias=True).float() / 255
        out = model([x])[0]
        keep = out["scores"] >= score_thresh
        boxes = out["boxes"][keep] * torch.tensor([w / size, h / size, w / size, h / size])
        labels = [names[i] if i < len(names) else str(i) for i in out["labels"][keep].tolist()]
        scores = out["scores"][keep].tolist()
        drawn = draw_bounding_boxes(img, boxes, [f"{n} {s:.2f}" for n, s in zip(labels, scores)],
                                    colors="lime", width=2)
        dest = save_drawn(drawn, img_path, out_dir, "detections")
        results.append({"image": str(img_path), "output": str(dest),
                        "detections": [{"label": n, "score": s, "box": [round(v, 1) for v in b.tolist()]}
                                       for n, s, b in zip(labels, scores, boxes)]})
    return results
