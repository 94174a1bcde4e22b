"""COCO detection files: :class:`CocoDetection` (read with pycocotools or faster-coco-eval)."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from .files import PathLike, _FileDetection, _clip_box, _ranges


def _coco_api():
    """pycocotools' ``COCO`` class (or faster-coco-eval's, which has the same API)."""
    try:
        from pycocotools.coco import COCO
        return COCO
    except ImportError:
        pass
    from ..extras import MissingDependencyError, install_hint
    try:
        from faster_coco_eval import COCO
        return COCO
    except ImportError:
        raise MissingDependencyError(f"reading COCO annotations needs pycocotools (or faster-coco-eval), which is "
                                     f"not installed: {install_hint('pycocotools')} (or pip install pycocotools)") from None


def _require(obj: Any, fields: Sequence[str], what: str, path: Path) -> None:
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: {what} must be a JSON object, got {type(obj).__name__}")
    for f in fields:
        if f not in obj:
            raise ValueError(f"{path}: {what} has no '{f}' field (COCO needs {', '.join(fields)}); "
                             f"it has {sorted(obj)}")


def _coco_json_for(root: Path, split: Optional[str]) -> Path:
    found = sorted((root / "annotations").glob("*.json")) + sorted(root.glob("*.json"))
    if split is not None:
        tried = [root / "annotations" / f"instances_{split}.json", root / "annotations" / f"{split}.json"]
        for t in tried:
            if t.is_file():
                return t
        dated = sorted((root / "annotations").glob(f"instances_{split}*.json"))  # e.g. instances_val2017
        if len(dated) == 1:
            return dated[0]
        raise FileNotFoundError(f"COCO folder {root}: no annotations for split '{split}' (looked for "
                                f"{', '.join(str(t) for t in tried)}; found {[str(f) for f in found]}); "
                                f"pass the .json file itself to read another one")
    if len(found) == 1:
        return found[0]
    raise ValueError(f"COCO folder {root}: expected one annotation file in annotations/ or the folder, "
                     f"found {len(found)} ({[f.name for f in found]}); pass split= or the .json file")


def _coco_images_dir(json_path: Path, file_names: Sequence[str]) -> Path:
    """The folder holding most of the first images of the file, among the usual layouts."""
    stem = json_path.stem
    split = stem[len("instances_"):] if stem.startswith("instances_") else stem
    up, here = json_path.parent.parent, json_path.parent
    candidates = [up / "images" / split, up / split, here / "images" / split, here / "images",
                  up / "images", here]
    if not file_names:
        return next((c for c in candidates if c.is_dir()), here)
    sample = list(file_names)[:20]
    hits = [(sum((c / f).exists() for f in sample), -k, c) for k, c in enumerate(candidates) if c.is_dir()]
    best = max(hits, default=(0, 0, here))
    if best[0] == 0:
        raise FileNotFoundError(f"{json_path}: cannot find its images (looked for {sample[0]!r} ... in "
                                f"{', '.join(str(c) for c in candidates)}); pass images_dir=")
    return best[2]


class CocoDetection(_FileDetection):
    """A COCO instances file and its images, read with pycocotools (or faster-coco-eval).

    Layouts found without ``images_dir``: ``root/annotations/instances_<split>.json`` with
    ``root/images/<split>/`` (what :func:`write_coco` writes) or ``root/<split>/`` (COCO 2017:
    ``split="val"`` also finds the one ``instances_val*.json``, e.g. ``instances_val2017.json``
    with ``val2017/``), and ``root/instances.json`` with ``root/images/``. Crowd annotations (``iscrowd: 1``) are
    left out (counted in ``dataset.crowd``). Category ids map to contiguous labels 1..K in
    increasing id order (``dataset.category_ids[label - 1]`` is the file's id). ``masks`` are
    in the targets when every annotation has a ``segmentation`` (polygons or RLE).

    Args:
        root_or_json: the ``.json`` file, or a COCO folder (then ``split`` picks
            ``annotations/instances_<split>.json``; without it the folder must hold one file).
        images_dir: the folder the ``file_name`` entries are relative to (default: found).
        split: the split name, with a folder ``root_or_json``.
        transforms: a callable on ``(image, target)``.
        check_images: open every image's header up front and skip the unreadable ones (default);
            False: only images that fail to decode when read are skipped.
    """

    def __init__(self, root_or_json: PathLike, images_dir: Optional[PathLike] = None,
                 split: Optional[str] = None, transforms: Optional[Callable] = None,
                 check_images: bool = True) -> None:
        root = Path(root_or_json)
        if root.is_dir():
            path = _coco_json_for(root, split)
        elif root.is_file():
            path = root
        else:
            raise FileNotFoundError(f"COCO annotations not found: {root} (expected a .json file or a "
                                    f"folder with annotations/instances_<split>.json)")
        super().__init__(str(path), transforms)
        COCO = _coco_api()
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a COCO JSON file ({e})") from None
        _require(data, ("images", "annotations", "categories"), "the file", path)
        for key in ("images", "annotations", "categories"):
            if not isinstance(data[key], list):
                raise ValueError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")
        for i, im in enumerate(data["images"]):
            _require(im, ("id", "file_name", "width", "height"), f"images[{i}]", path)
        for i, c in enumerate(data["categories"]):
            _require(c, ("id", "name"), f"categories[{i}]", path)
        for i, a in enumerate(data["annotations"]):
            _require(a, ("id", "image_id", "category_id", "bbox"), f"annotations[{i}]", path)
            b = a["bbox"]
            if not (isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b)):
                raise ValueError(f"{path}: annotations[{i}] (id {a['id']}): 'bbox' must be 4 numbers "
                                 f"[x, y, width, height], got {b!r}")

        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.category_ids = [int(c["id"]) for c in cats]
        if len(set(self.category_ids)) != len(cats):
            raise ValueError(f"{path}: duplicate category ids in 'categories': {self.category_ids}")
        self.classes = ["__background__"] + [str(c["name"]) for c in cats]
        label_of = {cid: k + 1 for k, cid in enumerate(self.category_ids)}
        image_ids = {im["id"] for im in data["images"]}
        for a in data["annotations"]:
            if a["category_id"] not in label_of:
                raise ValueError(f"{path}: annotation id {a['id']} has category_id {a['category_id']}, not "
                                 f"one of the file's categories (valid ids: {_ranges(self.category_ids)}); "
                                 f"add it to 'categories' or fix the annotation")
            if a["image_id"] not in image_ids:
                raise ValueError(f"{path}: annotation id {a['id']} refers to image_id {a['image_id']}, "
                                 f"which is not in 'images'")

        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            self.coco.createIndex()
        self.images_dir = Path(images_dir) if images_dir is not None else _coco_images_dir(
            path, [im["file_name"] for im in data["images"][:20]])
        self.with_masks = bool(data["annotations"]) and all(a.get("segmentation") for a in data["annotations"])
        self.crowd = 0

        records = []
        for im in data["images"]:
            boxes, labels, anns = [], [], []
            w, h = float(im["width"]), float(im["height"])
            for a in self.coco.imgToAnns.get(im["id"], []):
                if a.get("iscrowd", 0):
                    self.crowd += 1
                    continue
                x, y, bw, bh = (float(v) for v in a["bbox"])
                where = f"annotation id {a['id']} of {im['file_name']}, bbox {a['bbox']}"
                if not (bw > 0 and bh > 0):
                    self._log.add("degenerate_boxes", where)
                    continue
                box, clipped = _clip_box([x, y, x + bw, y + bh], w, h)
                if not (box[2] > box[0] and box[3] > box[1]):
                    self._log.add("degenerate_boxes", where + " (outside the image)")
                    continue
                if clipped:
                    self._log.add("clipped_boxes", where + f", image {im['width']}x{im['height']}")
                boxes.append(box)
                labels.append(label_of[a["category_id"]])
                anns.append(a)
            records.append({"path": self.images_dir / im["file_name"], "image_id": im["id"],
                            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                            "labels": torch.tensor(labels, dtype=torch.int64), "anns": anns,
                            "size": (int(im["height"]), int(im["width"]))})
        self.records = self._keep_readable(records, check_images)
        if records and not self.records:
            raise FileNotFoundError(f"{path}: none of the {len(records)} images could be read from "
                                    f"{self.images_dir} (first: {self._log.examples['unreadable_images']}); "
                                    "pass images_dir= if they are elsewhere")
        self._log.warn()

    def _extra_targets(self, record: dict, height: int, width: int) -> dict:
        if not self.with_masks:
            return {}
        masks = torch.zeros((len(record["anns"]), height, width), dtype=torch.uint8)
        for k, a in enumerate(record["anns"]):
            with warnings.catch_warnings():  # pycocotools' decode under numpy 2: a DeprecationWarning
                warnings.simplefilter("ignore", DeprecationWarning)
                m = torch.from_numpy(self.coco.annToMask(a))
            mh, mw = min(m.shape[0], height), min(m.shape[1], width)
            masks[k, :mh, :mw] = m[:mh, :mw]
        return {"masks": masks}

    def __repr__(self) -> str:
        return (f"CocoDetection({self._log.source!r}, images={len(self)}, "
                f"classes={len(self.classes) - 1}, "
                f"masks={self.with_masks})")


# --- YOLO -----------------------------------------------------------------------------------------
