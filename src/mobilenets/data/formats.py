"""Detection data on disk: COCO and YOLO (Ultralytics) writers and readers.

Every reader returns what :class:`~mobilenets.data.DigitScenes` returns: ``(image,
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

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from torch.utils.data import Dataset

from .coco import CocoDetection
from .files import DataWarning, PathLike
from .writers import write_coco, write_yolo
from .yolo import YoloDetection

__all__ = ["CocoDetection", "DataWarning", "YoloDetection", "detection_collate", "open_detection_data",
           "write_coco", "write_yolo"]


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
