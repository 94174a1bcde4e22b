"""What the file readers share: the bad-input log and warning (:class:`DataWarning`), box
repair, :class:`_FileDataset`, the dataset over files with one record per item that skips (and
counts) the items whose files cannot be used, and its detection form :class:`_FileDetection`."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
from torch.utils.data import Dataset

from .common import open_image, read_rgb


PathLike = Union[str, os.PathLike]


class DataWarning(UserWarning):
    """Data that a reader repaired (dropped, clipped or skipped) and counted."""


_ISSUES = {
    "degenerate_boxes": ("box(es) with zero width or height (or wholly outside the image) dropped",
                         "fix or delete these annotations"),
    "clipped_boxes": ("box(es) partly outside the image clipped to it",
                      "check the coordinates (COCO bbox: [x, y, width, height] in pixels; "
                      "YOLO: class cx cy w h normalised to 0..1)"),
    "unreadable_images": ("unreadable image(s) skipped",
                          "check that the files exist and open as images, or remove them from the "
                          "annotations"),
    "mismatched_masks": ("mask(s) whose size differs from the image skipped",
                         "save each mask at its image's size (same width and height), or remove the "
                         "id from the split list"),
}
#: What a detection reader counts (``dataset.issues``).
DETECTION_ISSUES = ("degenerate_boxes", "clipped_boxes", "unreadable_images")


class _IssueLog:
    """Counts of repaired input with the first example of each, warned once per kind."""

    def __init__(self, source: str, kinds: Sequence[str] = DETECTION_ISSUES) -> None:
        self.source = source
        self.counts = {k: 0 for k in kinds}
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
        for kind in self.counts:
            n = self.counts[kind]
            if n:
                what, fix = _ISSUES[kind]
                warnings.warn(f"{self.source}: {n} {what} (first: {self.examples[kind]}); {fix}",
                              DataWarning, stacklevel=4)


def _image_opens(path: Path) -> Optional[str]:
    """None if PIL can identify the image (header only, cheap), else the reason."""
    try:
        with open_image(path):
            return None
    except FileNotFoundError:
        return "file not found"
    except OSError as e:
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
class _SkipItem(Exception):
    """An item whose files cannot be used: skipped and counted as ``kind`` (a key of the log)."""

    def __init__(self, kind: str, example: str) -> None:
        super().__init__(example)
        self.kind, self.example = kind, example


class _FileDataset(Dataset):
    """Items read from files on disk, one record per item (a dict with at least ``path``, the
    image). Subclasses fill ``self.records``, implement :meth:`_load` and may extend
    :meth:`_check`. An item whose files cannot be used (``OSError`` or :class:`_SkipItem`
    from :meth:`_load`) is skipped, counted and warned about, and the next usable one is
    returned; ``issue_kinds`` are the counts ``dataset.issues`` reports."""

    classes: list[str]
    issue_kinds: Sequence[str] = DETECTION_ISSUES

    def __init__(self, source: str, transforms: Optional[Callable]) -> None:
        self.transforms = transforms
        self.records: list[dict] = []
        self._log = _IssueLog(source, self.issue_kinds)
        self._bad: set[int] = set()

    @property
    def issues(self) -> dict[str, int]:
        """How many items (or boxes) were skipped or repaired, per kind (see the module doc)."""
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

    def _check(self, record: dict) -> None:
        """The cheap up-front check of a record (file headers only): :class:`_SkipItem` when it
        cannot be used."""
        why = _image_opens(record["path"])
        if why is not None:
            raise _SkipItem("unreadable_images", f"{record['path']} ({why})")

    def _keep_readable(self, records: list[dict], check: bool) -> list[dict]:
        if not check:
            return records
        kept = []
        for r in records:
            try:
                self._check(r)
            except _SkipItem as skip:
                self._log.add(skip.kind, skip.example)
            else:
                kept.append(r)
        return kept

    def _load(self, record: dict) -> tuple[torch.Tensor, object]:
        """``(image, target)`` of a record, before ``transforms``."""
        raise NotImplementedError

    def __getitem__(self, index: int):
        n = len(self.records)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index %= n
        for k in range(n):  # an item whose files fail to decode is skipped: the next readable one
            j = (index + k) % n
            if j in self._bad:
                continue
            record = self.records[j]
            try:
                image, target = self._load(record)
            except OSError as e:
                self._bad.add(j)
                self._log.add_and_warn("unreadable_images", f"{record['path']} ({type(e).__name__}: {e})")
                continue
            except _SkipItem as skip:
                self._bad.add(j)
                self._log.add_and_warn(skip.kind, skip.example)
                continue
            if self.transforms is not None:
                image, target = self.transforms(image, target)
            return image, target
        first = next(iter(self._log.examples.values()), None)
        raise OSError(f"{self._log.source}: none of the {n} images could be read (first: {first})")


class _FileDetection(_FileDataset):
    """Images on disk with boxes held in memory. Subclasses fill ``self.records`` (dicts with
    ``path``, ``boxes`` (N, 4) float32, ``labels`` (N,) int64, ``image_id``) and may override
    :meth:`_boxes_in_pixels` and :meth:`_extra_targets`."""

    category_ids: list[int]

    def _boxes_in_pixels(self, record: dict, height: int, width: int) -> torch.Tensor:
        return record["boxes"].clone()

    def _extra_targets(self, record: dict, height: int, width: int) -> dict:
        return {}

    def _load(self, record: dict) -> tuple[torch.Tensor, dict]:
        image = read_rgb(record["path"])
        h, w = image.shape[-2:]
        boxes = self._boxes_in_pixels(record, h, w)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        target = {"boxes": boxes, "labels": record["labels"].clone(), "image_id": record["image_id"],
                  **self._extra_targets(record, h, w)}
        return image.float().div_(255), target


# --- COCO -----------------------------------------------------------------------------------------
