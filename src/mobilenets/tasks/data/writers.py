"""Writing detection datasets to disk as COCO (:func:`write_coco`) or YOLO (:func:`write_yolo`),
atomically per split (see :mod:`.formats`)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch.utils.data import Dataset

from .files import PathLike


def _as_uint8(image: torch.Tensor) -> torch.Tensor:
    image = torch.as_tensor(image)
    if image.dtype == torch.uint8:
        return image
    return (image.float().clamp(0, 1) * 255).round().to(torch.uint8)


def _save_png(image: torch.Tensor, path: Path) -> None:
    from PIL import Image

    Image.fromarray(_as_uint8(image).permute(1, 2, 0).contiguous().numpy()).save(path, compress_level=6)


def _rle(mask: torch.Tensor) -> dict:
    """COCO's uncompressed RLE of a (H, W) mask: column-major run lengths, zeros first."""
    h, w = mask.shape
    flat = mask.t().reshape(-1).to(torch.int8)
    change = (flat[1:] != flat[:-1]).nonzero()[:, 0] + 1
    bounds = torch.cat([torch.tensor([0]), change, torch.tensor([flat.numel()])])
    counts = (bounds[1:] - bounds[:-1]).tolist()
    if flat.numel() and flat[0] == 1:
        counts = [0] + counts
    return {"size": [int(h), int(w)], "counts": counts}


def _dataset_classes(dataset: Dataset) -> tuple[list[str], list[int]]:
    classes = getattr(dataset, "classes", None)
    if not classes or classes[0] != "__background__":
        raise ValueError(f"{type(dataset).__name__}: a dataset to write needs .classes = "
                         f"['__background__', name_1, ...], got {classes!r}")
    names = list(classes[1:])
    ids = list(getattr(dataset, "category_ids", None) or range(1, len(names) + 1))
    return names, ids


def _swap_in(new: Path, dest: Path) -> None:
    """Rename the finished folder ``new`` onto ``dest`` (an old ``dest`` is renamed away first)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if dest.exists():
        old = dest.with_name(f".old-{dest.name}-{uuid.uuid4().hex[:8]}")
        os.replace(dest, old)
    os.replace(new, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _check_split(split: str) -> None:
    if not split or any(c in split for c in "/\\") or split.startswith("."):
        raise ValueError(f"split must be a plain folder name like 'train' or 'val', got {split!r}")


def _items(dataset: Dataset, progress: Optional[Callable[[int], None]]):
    for i in range(len(dataset)):
        image, target = dataset[i]
        yield i, image, target
        if progress is not None:
            progress(1)


def _written_items(dataset: Dataset, images_dir: Path, names: Sequence[str],
                   progress: Optional[Callable[[int], None]], who: str):
    """Save every image as ``images_dir/<index:06d>.png`` and yield ``(index, width, height,
    target, objects)``, ``objects`` a list of ``(k, [x1, y1, x2, y2], label)`` whose labels are
    checked against ``names`` (``ValueError`` naming the image)."""
    for i, image, target in _items(dataset, progress):
        h, w = int(image.shape[-2]), int(image.shape[-1])
        _save_png(image, images_dir / f"{i:06d}.png")
        boxes = torch.as_tensor(target["boxes"], dtype=torch.float64).reshape(-1, 4)
        objects = []
        for k, (box, label) in enumerate(zip(boxes.tolist(), torch.as_tensor(target["labels"]).tolist())):
            if not 1 <= label <= len(names):
                raise ValueError(f"{who}: image {i} has label {label}, outside 1..{len(names)} "
                                 f"(dataset.classes has {len(names)} classes)")
            objects.append((k, box, label))
        yield i, w, h, target, objects


def write_coco(dataset: Dataset, out_dir: PathLike, split: str,
               progress: Optional[Callable[[int], None]] = None) -> Path:
    """Write a detection dataset as COCO: ``out_dir/images/<split>/<index:06d>.png`` and
    ``out_dir/annotations/instances_<split>.json`` (image ``id`` = index; annotations with
    ``bbox`` [x, y, w, h], ``area`` (mask pixels, else box area), ``iscrowd`` 0, ``category_id``
    (``dataset.category_ids``, default the label 1..K) and, with ``masks``, a ``segmentation``
    as uncompressed RLE). Atomic per split (see the module doc); an existing split is replaced.

    Args:
        dataset: items ``(image, target)`` as :class:`DigitScenes` returns them, and ``.classes``.
        out_dir: the output folder (created).
        split: the split name (``train``, ``val``).
        progress: called with 1 after each image (e.g. a tqdm bar's ``update``).

    Returns:
        The annotation file.
    """
    from ...weights.io import atomic_write

    _check_split(split)
    names, cat_ids = _dataset_classes(dataset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-coco-{split}-", dir=out))
    try:
        (tmp / "images").mkdir()
        images, annotations = [], []
        for i, w, h, target, objects in _written_items(dataset, tmp / "images", names, progress, "write_coco"):
            images.append({"id": i, "file_name": f"{i:06d}.png", "width": w, "height": h})
            masks = target.get("masks")
            for k, box, label in objects:
                x1, y1, x2, y2 = box
                ann = {"id": len(annotations) + 1, "image_id": i, "category_id": cat_ids[label - 1],
                       "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                       "area": round((x2 - x1) * (y2 - y1), 3), "iscrowd": 0}
                if masks is not None:
                    ann["segmentation"] = _rle(masks[k])
                    ann["area"] = int(masks[k].bool().sum())
                annotations.append(ann)
        doc = {"info": {"description": f"{type(dataset).__name__} {split}, written by mobilenets"},
               "images": images, "annotations": annotations,
               "categories": [{"id": cid, "name": n, "supercategory": "none"} for cid, n in zip(cat_ids, names)]}
        text = json.dumps(doc, separators=(",", ":"))
        _swap_in(tmp / "images", out / "images" / split)
        return atomic_write(out / "annotations" / f"instances_{split}.json",
                            lambda t: Path(t).write_text(text, encoding="utf-8"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _yaml_str(s: str) -> str:
    return json.dumps(str(s))  # a double-quoted JSON string is a valid YAML scalar


def write_yolo(dataset: Dataset, out_dir: PathLike, split: str,
               progress: Optional[Callable[[int], None]] = None) -> Path:
    """Write a detection dataset in the Ultralytics YOLO layout: ``out_dir/images/<split>/
    <index:06d>.png``, ``out_dir/labels/<split>/<index:06d>.txt`` (``class cx cy w h`` per object,
    normalised, class = label - 1; an empty file for a negative) and ``out_dir/data.yaml``
    (``path`` absolute, ``train: images/train``, ``val: images/val``, other written splits,
    ``nc``, ``names``). Atomic per split: labels, then images, then data.yaml.

    Args:
        dataset: items ``(image, target)`` as :class:`DigitScenes` returns them, and ``.classes``.
        out_dir: the output folder (created).
        split: the split name (``train``, ``val``).
        progress: called with 1 after each image (e.g. a tqdm bar's ``update``).

    Returns:
        The data.yaml file.
    """
    from ...weights.io import atomic_write

    _check_split(split)
    names, _ = _dataset_classes(dataset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-yolo-{split}-", dir=out))
    try:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        for i, w, h, _, objects in _written_items(dataset, tmp / "images", names, progress, "write_yolo"):
            lines = []
            for _, (x1, y1, x2, y2), label in objects:
                lines.append(f"{label - 1} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                             f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
            (tmp / "labels" / f"{i:06d}.txt").write_text("".join(line + "\n" for line in lines))
        _swap_in(tmp / "labels", out / "labels" / split)
        _swap_in(tmp / "images", out / "images" / split)
        splits = ["train", "val"] + sorted({p.name for p in (out / "images").iterdir()
                                            if p.is_dir() and not p.name.startswith(".")} - {"train", "val"})
        text = ("# written by mobilenets (Ultralytics YOLO layout): images/<split>/, labels/<split>/\n"
                f"path: {_yaml_str(out.resolve())}\n"
                + "".join(f"{s}: {_yaml_str('images/' + s)}\n" for s in splits)
                + f"nc: {len(names)}\nnames:\n"
                + "".join(f"  {k}: {_yaml_str(n)}\n" for k, n in enumerate(names)))
        return atomic_write(out / "data.yaml", lambda t: Path(t).write_text(text, encoding="utf-8"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- loading --------------------------------------------------------------------------------------
