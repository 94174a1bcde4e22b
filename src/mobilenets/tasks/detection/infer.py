"""A trained detector from its checkpoint: evaluation (COCO mAP, per-class AP) and predictions
drawn on images (``mobilenets eval`` / ``mobilenets predict`` on a detection checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from ..checkpoint import checkpoint_task, load_task_checkpoint, read_image, save_drawn
from .convert import load_detector_weights
from ...data import detection_collate
from .training import architecture, detection_data, evaluate_detector

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
                             use_ema: bool = True, file: Optional[PathLike] = None) -> dict:
    """COCO metrics of a detection checkpoint on ``data`` (default: the run's validation data:
    ``digit-scenes`` or its folder; or another COCO / YOLO folder with the same classes).
    ``file``: the checkpoint's SSD network exported to ExecuTorch / LiteRT (e.g. INT8), run in its
    runtime with the checkpoint's pre- and post-processing on the host
    (:class:`~mobilenets.tasks.detection.mobile.MobileDetector`) instead of the eager model."""
    model, info = load_detector_checkpoint(path, use_ema)
    if file is not None:
        from .mobile import MobileDetector

        model = MobileDetector(model, file)
    r = info["recipe"]
    if data:
        r = r.replace(dataset="digit-scenes", data_dir=None) if data == "digit-scenes" else \
            r.replace(dataset="folder", data_dir=data)
    bundle = detection_data(r)
    if bundle.num_classes != len(info["classes"]):
        raise ValueError(f"{data or r.dataset} has {bundle.num_classes - 1} object classes but the checkpoint "
                         f"detects {len(info['classes']) - 1}")
    loader = torch.utils.data.DataLoader(bundle.val, batch_size=batch_size, shuffle=False,
                                         collate_fn=detection_collate)
    res = evaluate_detector(model, loader)
    res["class_names"] = info["classes"]
    if file is not None:
        res["file"], res["runtime"] = model.path, model.runtime
    return res


#: box and label colours, one per class (label 1 takes the first; the background is never drawn):
#: a fixed palette of 20 distinct colours (Trubetskoy's), so a class keeps its colour in every image
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (255, 225, 25), (0, 128, 128), (220, 190, 255), (170, 110, 40),
           (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (250, 190, 212),
           (128, 128, 128), (255, 250, 200))


def class_color(label: int) -> tuple[int, int, int]:
    """The palette colour of class ``label`` (1 is the first object class)."""
    return PALETTE[(int(label) - 1) % len(PALETTE)]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: the default font, scalable
    except TypeError:  # pragma: no cover - older Pillow: its fixed bitmap font
        return ImageFont.load_default()


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(boxes: Sequence[Sequence[float]], sizes: Sequence[tuple[int, int]], scores: Sequence[float],
                 image_size: tuple[int, int]) -> list[Optional[tuple[int, int, int, int]]]:
    """Where each box's label tag goes: ``(x0, y0, x1, y1)`` of a ``sizes[i]`` = ``(w, h)`` tag
    above the box, else inside its top, else below it, else inside its bottom (left-aligned with
    the box, kept inside the ``(H, W)`` image), the first place that overlaps no tag placed before;
    the highest scores are placed first. ``None``: no free place (the box is drawn without tag)."""
    h, w = image_size
    places: list[Optional[tuple[int, int, int, int]]] = [None] * len(boxes)
    taken: list[tuple] = []
    for i in sorted(range(len(boxes)), key=lambda j: -scores[j]):
        x0, y0, _, y1 = (int(round(v)) for v in boxes[i])
        tw, th = sizes[i]
        x = min(max(0, x0), max(0, w - tw))
        for y in (y0 - th, y0, y1, y1 - th):
            rect = (x, y, x + tw, y + th)
            if y >= 0 and y + th <= h and not any(_overlaps(rect, r) for r in taken):
                places[i] = rect
                taken.append(rect)
                break
    return places


def draw_detections(image: torch.Tensor, boxes: torch.Tensor, labels: Sequence[int], texts: Sequence[str],
                    scores: Sequence[float]):
    """``image`` (uint8 ``(3, H, W)``) with each box drawn in its class's colour
    (``torchvision.utils.draw_bounding_boxes``, :func:`class_color`) and its label on a filled tag
    of that colour where :func:`place_labels` puts it (tags never overlap; a box with no free
    place keeps its coloured outline without a tag). A PIL image."""
    from PIL import ImageDraw
    from torchvision.transforms.v2.functional import to_pil_image
    from torchvision.utils import draw_bounding_boxes

    h, w = image.shape[1:]
    colors = [class_color(lab) for lab in labels]
    if len(boxes):
        image = draw_bounding_boxes(image, boxes, colors=colors, width=max(2, round(min(h, w) / 160)))
    canvas = to_pil_image(image)
    draw = ImageDraw.Draw(canvas)
    font = _font(max(12, round(min(h, w) / 28)))
    extents = [draw.textbbox((0, 0), t, font=font) for t in texts]
    sizes = [(right - left + 4, bottom - top + 4) for left, top, right, bottom in extents]
    for i, rect in enumerate(place_labels(boxes.tolist(), sizes, scores, (h, w))):
        if rect is None:
            continue
        r, g, b = colors[i]
        ink = (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)
        draw.rectangle((rect[0], rect[1], rect[2] - 1, rect[3] - 1), fill=colors[i])
        draw.text((rect[0] + 2 - extents[i][0], rect[1] + 2 - extents[i][1]), texts[i], fill=ink, font=font)
    return canvas


@torch.no_grad()
def predict_detections(path: PathLike, images: Sequence[PathLike], out_dir: Optional[PathLike] = None,
                       score_thresh: float = 0.5, use_ema: bool = True) -> list[dict]:
    """Detect objects in image files and write each image with its boxes drawn (one colour per
    class, labels placed so they do not overlap: :func:`draw_detections`) as
    ``<out_dir>/<stem>_detections.png``.

    Returns one dict per image, in order: ``image``, ``output`` (the PNG), ``detections``
    (``label`` name, ``score``, ``box`` xyxy pixels of the original image; those scoring at least
    ``score_thresh``), ``best_score`` (the highest score of any detection the model returned,
    ``None`` if none; tells how far below the threshold a partly trained model is); or, for an
    image that cannot be read, ``image`` and ``error`` (the file and the cause), the other images
    still processed.
    """
    from torchvision.transforms.v2 import functional as F

    model, info = load_detector_checkpoint(path, use_ema)
    size = info["recipe"].img_size
    names = info["classes"]
    results = []
    for img_path in images:
        try:
            img = read_image(img_path)
        except ValueError as e:
            results.append({"image": str(img_path), "error": str(e)})
            continue
        h, w = img.shape[1:]
        x = F.resize(img, [size, size], antialias=True).float() / 255
        out = model([x])[0]
        best = float(out["scores"].max()) if len(out["scores"]) else None
        keep = out["scores"] >= score_thresh
        boxes = out["boxes"][keep] * torch.tensor([w / size, h / size, w / size, h / size])
        ids = out["labels"][keep].tolist()
        labels = [names[i] if i < len(names) else str(i) for i in ids]
        scores = out["scores"][keep].tolist()
        drawn = draw_detections(img, boxes, ids, [f"{n} {s:.2f}" for n, s in zip(labels, scores)], scores)
        dest = save_drawn(drawn, img_path, out_dir, "detections")
        results.append({"image": str(img_path), "output": str(dest), "best_score": best,
                        "detections": [{"label": n, "score": s, "box": [round(v, 1) for v in b.tolist()]}
                                       for n, s, b in zip(labels, scores, boxes)]})
    return results
