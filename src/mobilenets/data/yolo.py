"""YOLO (Ultralytics) detection folders: :class:`YoloDetection`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional

import torch

from .common import IMG_EXTENSIONS
from .files import PathLike, _FileDetection, _clip_box


def _load_yaml(path: Path) -> dict:
    from ..extras import require
    yaml = require("yaml", "reading a YOLO data.yaml")
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
