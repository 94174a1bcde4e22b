"""A trained segmenter from its checkpoint: evaluation (mIoU, pixel accuracy, per-class IoU) and
predictions overlaid on images with a colour legend (``mobilenets eval`` / ``mobilenets predict``
on a segmentation checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import checkpoint_task, load_task_checkpoint, read_image, save_drawn
from .convert import load_segmenter_weights
from ...data import segmentation_collate
from .training import Normalize, evaluate_segmenter, segmentation_data

PathLike = Union[str, Path]


def architecture(recipe) -> dict:
    """The builder options that shape a trained segmenter (the recipe's ``model_kwargs``:
    ``aux_loss``, ``output_stride``, ``width_mult``, ...)."""
    return dict(recipe.model_kwargs)


def is_segmentation_checkpoint(path: PathLike) -> bool:
    """Whether a training checkpoint was written by a ``--task segment`` run."""
    return checkpoint_task(path) == "segment"


def load_segmenter_checkpoint(path: PathLike, use_ema: bool = True) -> tuple[nn.Module, dict]:
    """``(segmenter in eval mode, info)`` from a ``mobilenets train --task segment`` checkpoint;
    ``info``: ``recipe``, ``classes`` (background first), ``epoch``, ``best``."""
    return load_task_checkpoint(path, "segment", architecture, load_segmenter_weights, use_ema)


def eval_segmenter_checkpoint(path: PathLike, data: Optional[str] = None, batch_size: int = 8,
                              use_ema: bool = True, img_size: Optional[int] = None) -> dict:
    """mIoU, pixel accuracy and per-class IoU of a segmentation checkpoint on ``data`` (default:
    the run's validation data: ``digit-scenes`` or its folder; or another VOC folder with the
    same classes).

    ``img_size``: evaluate with every image and its mask resized to this shorter side (masks
    nearest-neighbour), as torchvision evaluates its 520 px models at 320 px; the scenes stay
    those of the run (generated at its size). Default: the run's size.
    """
    from ...data import segmentation_transforms

    model, info = load_segmenter_checkpoint(path, use_ema)
    r = info["recipe"]
    if data:
        r = r.replace(dataset="digit-scenes", data_dir=None) if data == "digit-scenes" else \
            r.replace(dataset="folder", data_dir=data)
    bundle = segmentation_data(r)
    if img_size:
        bundle.val.transforms = segmentation_transforms(False, int(img_size))
    if bundle.classes != info["classes"]:
        raise ValueError(f"{data or r.dataset} has the classes {bundle.classes} but the checkpoint segments "
                         f"{info['classes']}")
    loader = torch.utils.data.DataLoader(bundle.val, batch_size=batch_size, shuffle=False,
                                         collate_fn=segmentation_collate)
    res = evaluate_segmenter(model, loader, len(info["classes"]), Normalize(r.mean, r.std))
    res["class_names"] = info["classes"]
    return res


def class_colors(n: int) -> list[tuple[int, int, int]]:
    """VOC's colour map for ``n`` classes (the background black)."""
    from ...data import voc_colormap

    return voc_colormap(n)


def _legend(image, names: Sequence[str], colors: Sequence[tuple[int, int, int]], fractions: Sequence[float]):
    """``image`` (PIL) with a legend strip on its right: a swatch, the class name and its share of
    the pixels, for each class present."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    rows = [(n, c, f) for n, c, f in zip(names, colors, fractions)]
    row_h, pad = 18, 6
    width = 150
    h = max(image.height, pad * 2 + row_h * max(1, len(rows)))
    canvas = Image.new("RGB", (image.width + width, h), (255, 255, 255))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (name, color, frac) in enumerate(rows):
        y = pad + i * row_h
        x = image.width + pad
        draw.rectangle([x, y, x + 12, y + 12], fill=tuple(color), outline=(0, 0, 0))
        draw.text((x + 18, y), f"{name} {100 * frac:.1f}%", fill=(0, 0, 0), font=font)
    return canvas


@torch.no_grad()
def predict_segmentation(path: PathLike, images: Sequence[PathLike], out_dir: Optional[PathLike] = None,
                         use_ema: bool = True, alpha: float = 0.55) -> list[dict]:
    """Segment image files and write each with its class mask overlaid
    (``torchvision.utils.draw_segmentation_masks``) and a colour legend as
    ``<out_dir>/<stem>_segmentation.png``.

    The image's shorter side is resized to the run's ``img_size`` (as the evaluation
    transform), the logits interpolated back to the original size.

    Returns one dict per image, in order: ``image``, ``output`` (the PNG), ``classes`` (``{name:
    share of the pixels}``, largest first, the background included); or, for an image that cannot
    be read, ``image`` and ``error`` (the file and the cause), the other images still processed.
    """
    from torchvision.transforms.v2 import functional as TF
    from torchvision.utils import draw_segmentation_masks

    model, info = load_segmenter_checkpoint(path, use_ema)
    r = info["recipe"]
    names = info["classes"]
    colors = class_colors(len(names))
    norm = Normalize(r.mean, r.std)
    results = []
    for img_path in images:
        try:
            img = read_image(img_path)
        except ValueError as e:
            results.append({"image": str(img_path), "error": str(e)})
            continue
        h, w = img.shape[1:]
        x = TF.resize(img, [r.img_size], antialias=True).float() / 255
        logits = model(norm(x[None]))["out"]
        pred = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False).argmax(1)[0]
        counts = torch.bincount(pred.flatten(), minlength=len(names)).tolist()
        present = [c for c in range(len(names)) if counts[c]]
        shown = [c for c in present if c != 0]  # the background is not painted
        drawn = img
        if shown:
            masks = torch.stack([pred == c for c in shown])
            drawn = draw_segmentation_masks(img, masks, alpha=alpha, colors=[tuple(colors[c]) for c in shown])
        order = sorted(present, key=lambda c: -counts[c])
        canvas = _legend(TF.to_pil_image(drawn), [names[c] for c in order], [colors[c] for c in order],
                         [counts[c] / (h * w) for c in order])
        dest = save_drawn(canvas, img_path, out_dir, "segmentation")
        results.append({"image": str(img_path), "output": str(dest),
                        "classes": {names[c]: round(counts[c] / (h * w), 4) for c in order}})
    return results
