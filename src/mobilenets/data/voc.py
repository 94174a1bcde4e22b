"""VOC-style semantic segmentation folders: :class:`VocSegmentation`, the class list
(``labelmap.txt`` or VOC's 21 names) and VOC's colour map.

The layout (PASCAL VOC 2012's, also what CVAT / Datumaro export and :func:`write_voc
<mobilenets.data.write_voc>` writes)::

    root/
      JPEGImages/<id>.jpg          (or .jpeg / .png / any image type; <id> may hold a sub-folder)
      SegmentationClass/<id>.png   class-index masks: mode "P" (palette, as VOC) or "L" (grey),
                                   pixel value = class index, 255 = ignore (VOC's object boundaries)
      ImageSets/Segmentation/<split>.txt   one id per line
      labelmap.txt                 optional: the classes, one per line (default: VOC's 21)

``labelmap.txt`` (CVAT's / Datumaro's VOC format): blank lines and lines starting with ``#`` are
skipped; every other line is ``name[:r,g,b[:parts[:actions]]]``. Line ``k`` (counting class lines
from 0) is class index ``k``, so the first is the background; a first class named
``background`` (any case) is called ``"__background__"``, torchvision's name, which the other
datasets of this package use. The colour (optional) is the class's colour for drawing
(``dataset.colors``; default VOC's colour map); parts and actions are ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .common import IMG_EXTENSIONS, open_image, read_rgb
from .common import DatasetError
from .files import PathLike, _FileDataset, _image_opens, _SkipItem

__all__ = ["IGNORE_INDEX", "VOC_CLASSES", "VocSegmentation", "voc_colormap"]

#: The mask value of pixels that count for nothing (VOC's object boundaries, padding).
IGNORE_INDEX = 255
#: PASCAL VOC's 21 classes, background first (torchvision's names).
VOC_CLASSES: list[str] = ["__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
                          "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
                          "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
#: Mask modes read as class indices.
MASK_MODES = ("P", "L")
LABELMAP = "labelmap.txt"
_LABELMAP_HEADER = "# label:color_rgb:parts:actions"
_BACKGROUND = "__background__"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png") + tuple(e for e in IMG_EXTENSIONS if e not in (".jpg", ".jpeg", ".png"))


def voc_colormap(n: int = 256) -> list[tuple[int, int, int]]:
    """VOC's colour map: colour ``k`` spreads the bits of ``k`` over the high bits of r, g, b
    (1 -> (128, 0, 0), 2 -> (0, 128, 0), 255 -> (224, 224, 192)), the palette of VOC's masks."""
    out = []
    for k in range(n):
        r = g = b = 0
        c = k
        for bit in range(7, -1, -1):
            r |= (c & 1) << bit
            g |= ((c >> 1) & 1) << bit
            b |= ((c >> 2) & 1) << bit
            c >>= 3
        out.append((r, g, b))
    return out


def read_labelmap(path: Path) -> tuple[list[str], list[Optional[tuple[int, int, int]]]]:
    """``(names, colours)`` of a ``labelmap.txt`` (see the module doc); a colour is None when the
    line gives none. ``ValueError`` naming the file and line for a bad line."""
    return parse_labelmap(path.read_text(encoding="utf-8"), path)


def parse_labelmap(text: str, path: PathLike = LABELMAP) -> tuple[list[str], list[Optional[tuple[int, int, int]]]]:
    """:func:`read_labelmap` of a text (``path`` names it in errors)."""
    names: list[str] = []
    colors: list[Optional[tuple[int, int, int]]] = []
    for ln, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        name = fields[0].strip()
        where = f"{path}, line {ln}"
        if not name:
            raise ValueError(f"{where}: empty class name in {line!r}; expected 'name:r,g,b::' (one class "
                             f"a line, background first)")
        if name in names:
            raise ValueError(f"{where}: class {name!r} is listed twice (first as class {names.index(name)})")
        color = None
        if len(fields) > 1 and fields[1].strip():
            try:
                rgb = tuple(int(v) for v in fields[1].split(","))
            except ValueError:
                rgb = ()
            if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
                raise ValueError(f"{where}: colour {fields[1]!r} of class {name!r} is not 'r,g,b' with "
                                 f"three integers 0..255")
            color = rgb
        names.append(name)
        colors.append(color)
    if not names:
        raise ValueError(f"{path}: no classes (expected one 'name:r,g,b::' line per class, background first)")
    if len(names) > IGNORE_INDEX:
        raise ValueError(f"{path}: {len(names)} classes, but mask values are 0..254 ({IGNORE_INDEX} is the "
                         f"ignore value): at most {IGNORE_INDEX} classes")
    if names[0].lower() == "background":
        names[0] = _BACKGROUND
    return names, colors


def format_labelmap(names: Sequence[str], colors: Sequence[tuple[int, int, int]]) -> str:
    """The text of a ``labelmap.txt`` for these classes (class 0 written as ``background``)."""
    lines = [_LABELMAP_HEADER]
    for k, (name, (r, g, b)) in enumerate(zip(names, colors)):
        name = "background" if k == 0 and name == _BACKGROUND else str(name)
        if not name or any(c in name for c in ":\n\r") or name != name.strip() or name.startswith("#"):
            raise ValueError(f"class {k} name {name!r} cannot be written to {LABELMAP} (no ':', line break, "
                             f"leading '#' or surrounding spaces)")
        lines.append(f"{name}:{r},{g},{b}::")
    return "\n".join(lines) + "\n"


def _find_image(images_dir: Path, image_id: str) -> Path:
    """``images_dir/<id>.<ext>`` for the first image suffix that exists (``.jpg`` if none)."""
    for ext in _IMAGE_SUFFIXES:
        p = images_dir / f"{image_id}{ext}"
        if p.is_file():
            return p
    return images_dir / f"{image_id}.jpg"


def _mask_mode_error(path: Path, mode: str) -> ValueError:
    return ValueError(
        f"{path}: a mask of mode {mode!r}; SegmentationClass/ needs class-index PNGs: mode 'P' (palette, "
        f"as VOC) or 'L' (greyscale), each pixel's value its class index, {IGNORE_INDEX} = ignore. To convert "
        f"a colour mask, map each colour to its class index (the colours of {LABELMAP}, or VOC's colour "
        f"map: mobilenets.data.voc_colormap()) and save the (H, W) uint8 index array with "
        f"PIL.Image.fromarray(index, mode='L').save(...)")


def _read_mask(path: Path) -> np.ndarray:
    """The (H, W) uint8 class indices of a mask file (``OSError`` when it does not decode)."""
    with open_image(path) as im:
        if im.mode not in MASK_MODES:
            raise _mask_mode_error(path, im.mode)
        return np.asarray(im, dtype=np.uint8)


def is_voc_folder(root: Path) -> bool:
    """Whether ``root`` looks like a VOC segmentation folder (its masks or its split lists)."""
    return (root / "SegmentationClass").is_dir() or (root / "ImageSets" / "Segmentation").is_dir()


class VocSegmentation(_FileDataset):
    """A VOC-style segmentation folder (layout and ``labelmap.txt``: the module doc).

    Items are ``(image, mask)``: ``image`` float32 (3, H, W) in [0, 1], ``mask`` int64 (H, W)
    with class indices 0..K-1 and 255 (ignore). ``dataset.classes`` is the class list (background
    first), ``dataset.colors`` one ``(r, g, b)`` per class, ``dataset.ids`` the split's ids.

    Bad input:

    - no folder, no ``JPEGImages/`` / ``SegmentationClass/`` or no ``ImageSets/Segmentation/<split>.txt``:
      ``FileNotFoundError`` naming the path and the layout expected (it lists the splits there are);
      a split file listing no ids: :class:`~mobilenets.data.classification.DatasetError`;
    - an image or mask that is missing or does not decode (corrupt PNG / JPEG): skipped and
      counted (``dataset.issues["unreadable_images"]``, one :class:`DataWarning`), as the
      detection readers do; when none is readable, ``FileNotFoundError``;
    - a mask whose size differs from its image: skipped and counted (``"mismatched_masks"``, a
      :class:`DataWarning` naming the file and both sizes): one bad pair must not stop a run
      over thousands, and cropping or resizing it would invent labels;
    - a mask that is not mode ``"P"`` or ``"L"`` (e.g. an RGB colour mask): ``ValueError`` naming
      the file and saying how to convert it;
    - mask values outside ``[0, K)`` other than 255: ``ValueError`` naming the file, the bad
      values and the class count (checked as each mask is read: it needs the pixels).

    With ``check_images`` (the default) the image and mask headers are read up front (cheap), so
    missing, unreadable and mismatched files are found and counted before training starts and an
    RGB mask fails at once; files that fail only when decoded are skipped when read.

    Args:
        root: the dataset folder (holding ``JPEGImages/``, ``SegmentationClass/``, ``ImageSets/``).
        split: the split list to read, ``ImageSets/Segmentation/<split>.txt`` (``train``, ``val``, ...).
        transforms: a callable on ``(image, mask)``, e.g.
            :func:`mobilenets.data.segmentation_transforms`.
        check_images: read every image's and mask's header up front (see above).
    """

    issue_kinds = ("unreadable_images", "mismatched_masks")
    ignore_index = IGNORE_INDEX

    def __init__(self, root: PathLike, split: str, transforms: Optional[Callable] = None,
                 check_images: bool = True) -> None:
        root = Path(root)
        layout = ("a VOC-style folder: JPEGImages/<id>.jpg|.png, SegmentationClass/<id>.png (class-index "
                  "masks), ImageSets/Segmentation/<split>.txt (ids), optional labelmap.txt")
        if not root.is_dir():
            raise FileNotFoundError(f"segmentation folder not found: {root} (expected {layout})")
        self.root = root
        self.images_dir, self.masks_dir = root / "JPEGImages", root / "SegmentationClass"
        sets = root / "ImageSets" / "Segmentation"
        for d in (self.images_dir, self.masks_dir, sets):
            if not d.is_dir():
                raise FileNotFoundError(f"{root}: no {d.relative_to(root)}/ folder (expected {layout})")
        split_file = sets / f"{split}.txt"
        if not split_file.is_file():
            have = sorted(p.stem for p in sets.glob("*.txt"))
            raise FileNotFoundError(f"{root}: no split list {split_file.relative_to(root)} for split {split!r} "
                                    f"(the splits there: {have or 'none'}); expected one image id per line")
        super().__init__(f"{root} [{split}]", transforms)
        self.split = split

        labelmap = root / LABELMAP
        if labelmap.is_file():
            self.classes, given = read_labelmap(labelmap)
        else:
            self.classes, given = list(VOC_CLASSES), [None] * len(VOC_CLASSES)
        palette = voc_colormap(len(self.classes))
        self.colors = [c if c is not None else palette[k] for k, c in enumerate(given)]

        ids = []
        for ln, line in enumerate(split_file.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            if len(line.split()) != 1:
                raise ValueError(f"{split_file}, line {ln}: expected one image id, got {line!r} (a "
                                 f"Segmentation split list has no flags)")
            ids.append(line)
        if not ids:
            raise DatasetError(f"{split_file}: lists no images (expected one id per line, with "
                               f"JPEGImages/<id>.jpg and SegmentationClass/<id>.png)")
        records = [{"path": _find_image(self.images_dir, i), "mask": self.masks_dir / f"{i}.png", "id": i}
                   for i in ids]
        self.records = self._keep_readable(records, check_images)
        if not self.records:
            raise FileNotFoundError(f"{split_file}: none of the {len(records)} listed images could be used "
                                    f"(first: {next(iter(self._log.examples.values()))})")
        self._log.warn()

    @property
    def ids(self) -> list[str]:
        """The ids of the items (those of the split list that were not skipped)."""
        return [r["id"] for r in self.records]

    def mask_path(self, index: int) -> Path:
        """The mask file of item ``index``."""
        return self.records[index]["mask"]

    def _check(self, record: dict) -> None:
        super()._check(record)
        mask = record["mask"]
        why = _image_opens(mask)
        if why is not None:
            raise _SkipItem("unreadable_images", f"{mask} ({why})")
        with open_image(record["path"]) as im, open_image(mask) as m:
            if m.mode not in MASK_MODES:
                raise _mask_mode_error(mask, m.mode)
            if m.size != im.size:
                raise _SkipItem("mismatched_masks", _mismatch(mask, m.size, im.size))

    def _load(self, record: dict) -> tuple[torch.Tensor, torch.Tensor]:
        image = read_rgb(record["path"])
        try:
            mask = _read_mask(record["mask"])
        except OSError as e:
            raise _SkipItem("unreadable_images", f"{record['mask']} ({type(e).__name__}: {e})") from None
        h, w = image.shape[-2:]
        if mask.shape != (h, w):
            raise _SkipItem("mismatched_masks", _mismatch(record["mask"], mask.shape[::-1], (w, h)))
        mask = torch.from_numpy(mask.astype(np.int64))
        k = len(self.classes)
        bad = mask[(mask >= k) & (mask != IGNORE_INDEX)]
        if bad.numel():
            values = bad.unique().tolist()
            raise ValueError(f"{record['mask']}: label values {values[:20]}{' ...' if len(values) > 20 else ''} "
                             f"outside the {k} classes (valid: 0..{k - 1}, and {IGNORE_INDEX} = ignore); fix the "
                             f"mask, or list every class in {self.root / LABELMAP} (one 'name:r,g,b::' line each, "
                             f"background first)")
        return image.float().div_(255), mask

    def __repr__(self) -> str:
        return f"VocSegmentation({self._log.source!r}, images={len(self)}, classes={len(self.classes)})"


def _mismatch(mask: Path, mask_wh: Sequence[int], image_wh: Sequence[int]) -> str:
    return f"{mask} is {mask_wh[0]}x{mask_wh[1]}, its image {image_wh[0]}x{image_wh[1]} (width x height)"
