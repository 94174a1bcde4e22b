"""Detection data on disk: COCO and YOLO (Ultralytics) writers and readers.

Every reader returns what :class:`~mobilenets.tasks.data.DigitScenes` returns: ``(image,
target)`` with ``image`` float32 (3, H, W) in [0, 1] and ``target`` a dict with ``boxes``
float32 (N, 4) xyxy absolute pixels, ``labels`` int64 (N,) in 1..K (0 is the background, as
torchvision counts), ``image_id`` int and, from COCO files with segmentations, ``masks`` uint8
(N, H, W). ``dataset.classes`` is ``["__background__", name_1, ..., name_K]`` and
``dataset.category_ids[label - 1]`` the file's own id of a label.

Bad input is either an error that names the file and the fix, or (for things a reader can
repair) a :class:`DataWarning` with a count, also kept in ``dataset.issues``:

- a box with zero width or height, or wholly outside its image: dropped, counted
  (``degenerate_boxes``);
- a box partly outside its image: clipped to it, counted (``clipped_boxes``);
- an unreadable image (missing, not an image, truncated): skipped, counted
  (``unreadable_images``);
- a class id outside the known classes: ``ValueError`` naming the file, the id and the valid range;
- a COCO file without ``images`` / ``annotations`` / ``categories`` or an annotation without
  ``bbox`` (any required field): ``ValueError`` naming the field and the file;
- a missing ``data.yaml`` or ``labels/<split>`` folder: ``FileNotFoundError`` naming it.

An image with no objects is a valid negative: ``boxes`` (0, 4), ``labels`` (0,).

The writers are atomic per split: images and labels go to a temporary folder inside the output
folder and are renamed into place when complete, the annotation file (COCO) or ``data.yaml``
(YOLO) last, so an interrupted write leaves the previous state (or nothing), never half a split.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch.utils.data import Dataset

from ...data import IMG_EXTENSIONS, read_rgb

__all__ = ["CocoDetection", "DataWarning", "YoloDetection", "detection_collate", "open_detection_data",
           "write_coco", "write_yolo"]

PathLike = Union[str, os.PathLike]


class DataWarning(UserWarning):
    """Detection data that a reader repaired (dropped, clipped or skipped) and counted."""


_ISSUES = {
    "degenerate_boxes": ("box(es) with zero width or height (or wholly outside the image) dropped",
                         "fix or delete these annotations"),
    "clipped_boxes": ("box(es) partly outside the image clipped to it",
                      "check the coordinates (COCO bbox: [x, y, width, height] in pixels; "
                      "YOLO: class cx cy w h normalised to 0..1)"),
    "unreadable_images": ("unreadable image(s) skipped",
                          "check that the files exist and open as images, or remove them from the "
                          "annotations"),
}


class _IssueLog:
    """Counts of repaired input with the first example of each, warned once per kind."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.counts = {k: 0 for k in _ISSUES}
        self.examples: dict[str, str] = {}

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] += 1
        self.examples.setdefault(kind, example)

    def add_and_warn(self, kind: str, example: str) -> None:
        """Count one more, and warn about this one now (a problem found while reading an item)."""
        self.add(kind, example)
        what, fix = _ISSUES[kind]
        warnings.warn(f"{self.source}: {what.replace('(s)', '')}: {example}; {fix} "
                      f"({self.counts[kind]} so far)", DataWarning, stacklevel=4)

    def warn(self) -> None:
        """One warning per kind with a count (after reading the annotations)."""
        for kind in _ISSUES:
            n = self.counts[kind]
            if n:
                what, fix = _ISSUES[kind]
                warnings.warn(f"{self.source}: {n} {what} (first: {self.examples[kind]}); {fix}",
                              DataWarning, stacklevel=4)


def _image_opens(path: Path) -> Optional[str]:
    """None if PIL can identify the image (header only, cheap), else the reason."""
    from PIL import Image

    try:
        with Image.open(path):
            return None
    except FileNotFoundError:
        return "file not found"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return f"{type(e).__name__}: {e}"


def _clip_box(box: Sequence[float], width: float, height: float) -> tuple[list[float], bool]:
    """(box clipped to [0, width] x [0, height], whether it changed)."""
    x1, y1, x2, y2 = box
    c = [min(max(x1, 0.0), width), min(max(y1, 0.0), height),
         min(max(x2, 0.0), width), min(max(y2, 0.0), height)]
    return c, c != [x1, y1, x2, y2]


def _ranges(ids: Sequence[int]) -> str:
    ids = sorted(ids)
    if ids and ids == list(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]}..{ids[-1]}"
    return "{" + ", ".join(map(str, ids[:30])) + (", ..." if len(ids) > 30 else "") + "}"


# --- the shared reader ----------------------------------------------------------------------------
class _FileDetection(Dataset):
    """Images on disk with boxes held in memory. Subclasses fill ``self.records`` (dicts with
    ``path``, ``boxes`` (N, 4) float32, ``labels`` (N,) int64, ``image_id``) and may override
    :meth:`_boxes_in_pixels` and :meth:`_extra_targets`."""

    classes: list[str]
    category_ids: list[int]

    def __init__(self, source: str, transforms: Optional[Callable]) -> None:
        self.transforms = transforms
        self.records: list[dict] = []
        self._log = _IssueLog(source)
        self._bad: set[int] = set()

    @property
    def issues(self) -> dict[str, int]:
        """How many boxes were dropped / clipped and images skipped (see the module doc)."""
        return dict(self._log.counts)

    @property
    def num_classes(self) -> int:
        """Classes including the background (torchvision's ``num_classes``)."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.records)

    def image_path(self, index: int) -> Path:
        """The image file of item ``index``."""
        return self.records[index]["path"]

    def _keep_readable(self, records: list[dict], check: bool) -> list[dict]:
        if not check:
            return records
        kept = []
        for r in records:
            why = _image_opens(r["path"])
            if why is None:
                kept.append(r)
            else:
                self._log.add("unreadable_images", f"{r['path']} ({why})")
        return kept

    def _boxes_in_pixels(self, record: dict, height: int, width: int) -> torch.Tensor:
        return record["boxes"].clone()

    def _extra_targets(self, record: dict, height: int, width: int) -> dict:
        return {}

    def __getitem__(self, index: int):
        n = len(self.records)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index %= n
        for k in range(n):  # an image that fails to decode is skipped: the next readable one
            j = (index + k) % n
            if j in self._bad:
                continue
            record = self.records[j]
            try:
                image = read_rgb(record["path"])
            except OSError as e:
                self._bad.add(j)
                self._log.add_and_warn("unreadable_images", f"{record['path']} ({type(e).__name__}: {e})")
                continue
            h, w = image.shape[-2:]
            boxes = self._boxes_in_pixels(record, h, w)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
            target = {"boxes": boxes, "labels": record["labels"].clone(), "image_id": record["image_id"],
                      **self._extra_targets(record, h, w)}
            image = image.float().div_(255)
            if self.transforms is not None:
                image, target = self.transforms(image, target)
            return image, target
        raise OSError(f"{self._log.source}: none of the {n} images could be read "
                      f"(first: {self._log.examples.get('unreadable_images')})")


# --- COCO -----------------------------------------------------------------------------------------
def _coco_api():
    """pycocotools' ``COCO`` class (or faster-coco-eval's, which has the same API)."""
    try:
        from pycocotools.coco import COCO
        return COCO
    except ImportError:
        pass
    try:
        from faster_coco_eval import COCO
        return COCO
    except ImportError:
        raise ImportError("reading COCO annotations needs pycocotools: pip install pycocotools "
                          "(or: pip install faster-coco-eval)") from None


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
def _load_yaml(path: Path) -> dict:
    try:
        import yaml
    except ImportError:
        raise ImportError("reading a YOLO data.yaml needs PyYAML: pip install pyyaml") from None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: not a YAML file ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with train, val, names (Ultralytics data.yaml), "
                         f"got {type(data).__name__}")
    return data


def _yolo_names(data: dict, path: Path) -> list[str]:
    names, nc = data.get("names"), data.get("nc")
    if names is None:
        if not isinstance(nc, int) or nc < 1:
            raise ValueError(f"{path}: needs 'names' (a list, or a mapping class id -> name) or 'nc'")
        return [str(i) for i in range(nc)]
    if isinstance(names, dict):
        keys = sorted(names)
        if keys != list(range(len(keys))):
            raise ValueError(f"{path}: 'names' keys must be the class ids 0..{len(keys) - 1}, got {keys}")
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names:
        raise ValueError(f"{path}: 'names' must be a non-empty list or mapping, got {names!r}")
    if nc is not None and nc != len(names):
        raise ValueError(f"{path}: 'nc' is {nc} but 'names' has {len(names)} entries")
    return [str(n) for n in names]


def _label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``, ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())


class YoloDetection(_FileDetection):
    """An Ultralytics-style YOLO dataset: ``data.yaml`` (``path``, ``train``, ``val``, ``names``
    or ``nc``), ``images/<split>/`` and ``labels/<split>/*.txt`` with one ``class cx cy w h`` line
    per object, normalised to 0..1 (a segment line ``class x1 y1 x2 y2 ...`` gives its polygon's
    box). Class ``c`` becomes label ``c + 1``. An image without a label file, or with an empty
    one, is a negative (counted in ``dataset.negatives``).

    ``path`` in data.yaml, when it exists (absolute, or relative to the yaml's folder), is the
    root the split entries are relative to; otherwise the yaml's folder is. A split entry is a
    folder of images (searched recursively), a ``.txt`` list of image paths, or a list of those.

    Args:
        root: the dataset folder (holding ``data.yaml``) or the yaml file.
        split: the key in data.yaml (``train``, ``val``, ``test``).
        transforms: a callable on ``(image, target)``.
        check_images: open every image's header up front and skip the unreadable ones (default).
    """

    def __init__(self, root: PathLike, split: str = "train", transforms: Optional[Callable] = None,
                 check_images: bool = True) -> None:
        root = Path(root)
        yaml_path = root if root.suffix.lower() in (".yaml", ".yml") else root / "data.yaml"
        if not yaml_path.is_file():
            raise FileNotFoundError(f"YOLO dataset description not found: {yaml_path} (expected a data.yaml "
                                    f"with train, val and names, in the Ultralytics layout)")
        super().__init__(f"{yaml_path} [{split}]", transforms)
        data = _load_yaml(yaml_path)
        names = _yolo_names(data, yaml_path)
        self.classes = ["__background__"] + names
        self.category_ids = list(range(len(names)))
        base = yaml_path.parent
        if data.get("path"):
            p = Path(str(data["path"]))
            p = p if p.is_absolute() else yaml_path.parent / p
            base = p if p.is_dir() else base
        if split not in data or not data[split]:
            raise ValueError(f"{yaml_path}: no '{split}' entry (it has {sorted(data)}); expected e.g. "
                             f"'{split}: images/{split}'")
        entries = data[split] if isinstance(data[split], list) else [data[split]]
        images: list[Path] = []
        for e in entries:
            p = Path(str(e))
            p = p if p.is_absolute() else base / p
            if p.is_dir():
                images += _list_images(p)
                labels_dir = _label_path(p / "x").parent
                if labels_dir != p and not labels_dir.is_dir():
                    raise FileNotFoundError(f"YOLO labels folder not found: {labels_dir} (expected one .txt per "
                                            f"image of {p}, named like the image)")
            elif p.is_file() and p.suffix == ".txt":
                for line in p.read_text(encoding="utf-8").splitlines():
                    if line.strip():
                        q = Path(line.strip())
                        images.append(q if q.is_absolute() else (p.parent / q).resolve())
                for d in sorted({_label_path(q).parent for q in images}):
                    if not d.is_dir():
                        raise FileNotFoundError(f"YOLO labels folder not found: {d} (listed images of {p} "
                                                "need their labels there)")
            else:
                raise FileNotFoundError(f"{yaml_path}: '{split}' entry {e!r} is neither a folder of images "
                                        f"nor a .txt list of them (looked at {p})")
        self.negatives = 0
        records = []
        for i, img in enumerate(images):
            boxes, labels = self._parse_labels(_label_path(img), img, len(names))
            self.negatives += not labels
            records.append({"path": img, "image_id": i, "boxes": torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
                            "labels": torch.tensor(labels, dtype=torch.int64)})
        self.records = self._keep_readable(records, check_images)
        self._log.warn()

    def _parse_labels(self, path: Path, image: Path, nc: int) -> tuple[list, list]:
        if not path.is_file():
            return [], []
        boxes, labels = [], []
        for ln, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            try:
                values = [float(v) for v in fields]
            except ValueError:
                raise ValueError(f"{path}, line {ln}: expected numbers 'class cx cy w h', got {line!r}") from None
            if len(values) < 5 or (len(values) > 5 and len(values) % 2 == 0):
                raise ValueError(f"{path}, line {ln}: expected 'class cx cy w h' (5 numbers) or a segment "
                                 f"'class x1 y1 x2 y2 ...' (an odd count >= 7), got {len(values)} numbers")
            c = values[0]
            if c != int(c) or not 0 <= c < nc:
                raise ValueError(f"{path}, line {ln}: class id {fields[0]} is outside the {nc} classes of "
                                 f"data.yaml (valid: 0..{nc - 1}); fix the label or add the class to 'names'")
            if len(values) == 5:
                cx, cy, w, h = values[1:]
                box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            else:
                xs, ys = values[1::2], values[2::2]
                box = [min(xs), min(ys), max(xs), max(ys)]
            where = f"{path}, line {ln}"
            if not (box[2] > box[0] and box[3] > box[1]) or not all(math.isfinite(v) for v in box):
                self._log.add("degenerate_boxes", where)
                continue
            clipped_box, clipped = _clip_box(box, 1.0, 1.0)
            if not (clipped_box[2] > clipped_box[0] and clipped_box[3] > clipped_box[1]):
                self._log.add("degenerate_boxes", where + " (outside the image)")
                continue
            if clipped:
                self._log.add("clipped_boxes", where + f" (normalised box {[round(v, 4) for v in box]})")
            boxes.append(clipped_box)
            labels.append(int(c) + 1)
        return boxes, labels

    def _boxes_in_pixels(self, record: dict, height: int, width: int) -> torch.Tensor:
        scale = torch.tensor([width, height, width, height], dtype=torch.float64)
        return (record["boxes"] * scale).float()

    def __repr__(self) -> str:
        return f"YoloDetection({self._log.source!r}, images={len(self)}, classes={len(self.classes) - 1})"


# --- writers --------------------------------------------------------------------------------------
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
def detection_collate(batch: Sequence[tuple[Any, dict]]) -> tuple[list, list]:
    """A DataLoader ``collate_fn`` for detection: ``(list of images, list of targets)`` (images
    may differ in size and targets in box count, so nothing is stacked).

    Args:
        batch: the ``(image, target)`` items of one batch.
    """
    return [item[0] for item in batch], [item[1] for item in batch]


def open_detection_data(spec: PathLike, split: str = "train", transforms: Optional[Callable] = None,
                        format: Optional[str] = None, **kwargs: Any) -> Dataset:
    """The detection dataset that ``spec`` names.

    Args:
        spec: ``"digit-scenes"`` (built in), a COCO folder (``annotations/*.json``) or ``.json``
            file, or a YOLO folder (``data.yaml``) or ``.yaml`` file.
        split: ``train`` or ``val`` (any split name for files on disk).
        transforms: a callable on ``(image, target)``, e.g. :func:`detection_transforms`.
        format: ``"coco"`` or ``"yolo"`` for a folder holding both (default: COCO, which keeps masks).
        **kwargs: passed to the dataset (e.g. ``num_images``, ``size`` for digit-scenes).
    """
    from .scenes import DigitScenes

    if format not in (None, "coco", "yolo"):
        raise ValueError(f"format must be 'coco', 'yolo' or None, got {format!r}")
    expected = ("expected 'digit-scenes', a COCO folder (annotations/instances_<split>.json + "
                "images/<split>/) or .json file, or a YOLO folder (data.yaml + images/<split>/ + "
                "labels/<split>/) or data.yaml")
    if str(spec) == "digit-scenes":
        return DigitScenes(split=split, transforms=transforms, **kwargs)
    p = Path(spec)
    if p.is_dir():
        is_coco = any((p / "annotations").glob("*.json"))
        is_yolo = (p / "data.yaml").is_file()
        if is_coco and format != "yolo":
            return CocoDetection(p, split=split, transforms=transforms, **kwargs)
        if is_yolo and format != "coco":
            return YoloDetection(p, split=split, transforms=transforms, **kwargs)
        found = sorted(q.name for q in p.iterdir())[:10]
        raise ValueError(f"detection data {str(spec)!r}: {expected}; the folder has "
                         f"{found or 'nothing'}" + (f" (and no {format.upper()} data)" if format else ""))
    if p.is_file() and p.suffix.lower() == ".json" and format != "yolo":
        return CocoDetection(p, transforms=transforms, **kwargs)
    if p.is_file() and p.suffix.lower() in (".yaml", ".yml") and format != "coco":
        return YoloDetection(p, split=split, transforms=transforms, **kwargs)
    why = "no such file or folder" if not p.exists() else "not a recognised file"
    raise ValueError(f"detection data {str(spec)!r}: {why}; {expected}")
