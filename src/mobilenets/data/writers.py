"""Writing datasets to disk, atomically per split: detection as COCO (:func:`write_coco`) or YOLO
(:func:`write_yolo`) (see :mod:`.formats`), segmentation as a VOC-style folder (:func:`write_voc`).

Each writer reads the items, encodes their images (PNG encoding is most of the time) and writes
their files in the calling process, or with ``workers=N`` in N worker processes (a
``DataLoader``'s): the files are the same either way, byte for byte, as every item depends only
on its index. The per-image arithmetic is numpy's, single-threaded (torch's intra-op threads
only slow such small ops down).

Why one module: the three writers share the per-item pipeline (draw, encode, write atomically,
in the calling process or in workers) and differ only in their annotation files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from functools import partial
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .files import PathLike
from .voc import IGNORE_INDEX, LABELMAP, format_labelmap, parse_labelmap, read_labelmap, voc_colormap


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _as_uint8(image: torch.Tensor) -> np.ndarray:
    """A (3, H, W) image, float in [0, 1] or uint8, as an (H, W, 3) uint8 array: float values
    clamped to [0, 1], times 255 and rounded half to even, in float32 (as torch computes it)."""
    image = torch.as_tensor(image)
    if image.dtype == torch.uint8:
        a = _numpy(image)
    else:
        a = np.clip(_numpy(image.float()), 0, 1)
        a = np.rint(np.multiply(a, np.float32(255), dtype=np.float32)).astype(np.uint8)
    return np.ascontiguousarray(a.transpose(1, 2, 0))


def _save_image(image: torch.Tensor, path: Path) -> None:
    """A (3, H, W) image (float in [0, 1] or uint8) as PNG (lossless) or JPEG (quality 95), by suffix."""
    from PIL import Image

    im = Image.fromarray(_as_uint8(image))
    if path.suffix.lower() in (".jpg", ".jpeg"):
        im.save(path, quality=95)
    else:
        im.save(path, compress_level=6)


def _rle(mask: torch.Tensor) -> dict:
    """COCO's uncompressed RLE of a (H, W) mask (tensor or array): column-major run lengths,
    zeros first."""
    m = _numpy(mask)
    h, w = m.shape
    flat = m.T.reshape(-1).astype(np.int8)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], change, [flat.size]))).tolist()
    if flat.size and flat[0] == 1:
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


class _Records(Dataset):
    """Item ``i`` of ``dataset`` turned into ``make_record(i, image, target)`` (what a worker
    process hands back: the files are written, only the bookkeeping returns)."""

    def __init__(self, dataset: Dataset, make_record: Callable) -> None:
        self.dataset, self.make_record = dataset, make_record

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image, target = self.dataset[i]
        return self.make_record(i, image, target)


def _as_is(record):
    return record


def _check_workers(workers: int, who: str) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"{who}: workers must be an int >= 0 (0: write in this process), got {workers!r}")
    return workers


def _records(dataset: Dataset, make_record: Callable, progress: Optional[Callable[[int], None]],
             workers: int = 0):
    """Yield ``make_record(i, image, target)`` for every item in index order, calling
    ``progress(1)`` after each; with ``workers`` > 0 the items are read and ``make_record`` runs
    in that many worker processes (an error there is raised here, with its traceback)."""
    items = _Records(dataset, make_record)
    if workers > 0 and len(items) > 1:
        from torch.utils.data import DataLoader
        # read an item here first: what the dataset loads lazily and keeps (digit-scenes: the
        # digits, a second or so) is then loaded once, before the workers fork, not by each
        dataset[0]
        records = DataLoader(items, batch_size=None, num_workers=min(workers, len(items)), collate_fn=_as_is)
    else:
        records = (items[i] for i in range(len(items)))
    for record in records:
        yield record
        if progress is not None:
            progress(1)


def _saved_image_objects(images_dir: Path, names: Sequence[str], who: str, i: int, image, target):
    """Save item ``i``'s image as ``images_dir/<index:06d>.png``; return ``(width, height,
    objects)``, ``objects`` a list of ``(k, [x1, y1, x2, y2], label)`` whose labels are checked
    against ``names`` (``ValueError`` naming the image)."""
    h, w = int(image.shape[-2]), int(image.shape[-1])
    _save_image(image, images_dir / f"{i:06d}.png")
    boxes = torch.as_tensor(target["boxes"], dtype=torch.float64).reshape(-1, 4)
    objects = []
    for k, (box, label) in enumerate(zip(boxes.tolist(), torch.as_tensor(target["labels"]).tolist())):
        if not 1 <= label <= len(names):
            raise ValueError(f"{who}: image {i} has label {label}, outside 1..{len(names)} "
                             f"(dataset.classes has {len(names)} classes)")
        objects.append((k, box, label))
    return w, h, objects


def _coco_record(images_dir: Path, names: Sequence[str], cat_ids: Sequence[int], i: int, image, target):
    """Item ``i``'s image written; its COCO image entry and annotations (without ``id``)."""
    w, h, objects = _saved_image_objects(images_dir, names, "write_coco", i, image, target)
    masks = target.get("masks")
    anns = []
    for k, box, label in objects:
        x1, y1, x2, y2 = box
        ann = {"image_id": i, "category_id": cat_ids[label - 1],
               "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
               "area": round((x2 - x1) * (y2 - y1), 3), "iscrowd": 0}
        if masks is not None:
            m = _numpy(masks[k])
            ann["segmentation"] = _rle(m)
            ann["area"] = int(np.count_nonzero(m))
        anns.append(ann)
    return {"id": i, "file_name": f"{i:06d}.png", "width": w, "height": h}, anns


def write_coco(dataset: Dataset, out_dir: PathLike, split: str,
               progress: Optional[Callable[[int], None]] = None, *, workers: int = 0) -> Path:
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
        workers: worker processes reading the items and writing the images (0: this process;
            more: the dataset must work in a ``DataLoader``'s worker processes). Same files.

    Returns:
        The annotation file.
    """
    from ..weights.io import atomic_write

    _check_split(split)
    _check_workers(workers, "write_coco")
    names, cat_ids = _dataset_classes(dataset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-coco-{split}-", dir=out))
    try:
        (tmp / "images").mkdir()
        images, annotations = [], []
        record = partial(_coco_record, tmp / "images", names, cat_ids)
        for image_entry, anns in _records(dataset, record, progress, workers):
            images.append(image_entry)
            annotations += [{"id": len(annotations) + k + 1, **ann} for k, ann in enumerate(anns)]
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


def _yolo_extent(lo: float, hi: float, size: int) -> tuple[str, str]:
    """One axis of a YOLO box, ``(centre, extent)`` normalised, 6 decimals, both in [0, 1],
    such that the edges a reader computes, ``centre -/+ extent / 2``, stay in [0, 1]: rounding
    the centre and the extent separately can put an edge on the image's border a rounding step
    outside it (``0.892188 + 0.215625 / 2 = 1.0000005``); the extent is then shrunk by one step
    (1e-6 of the image) at a time until both edges are inside."""
    c = f"{min(max((lo + hi) / 2 / size, 0.0), 1.0):.6f}"
    e = f"{min(max((hi - lo) / size, 0.0), 1.0):.6f}"
    while float(e) > 0 and not 0.0 <= float(c) - float(e) / 2 <= float(c) + float(e) / 2 <= 1.0:
        e = f"{float(e) - 1e-6:.6f}"
    return c, e


def _yolo_record(images_dir: Path, labels_dir: Path, names: Sequence[str], i: int, image, target) -> int:
    """Item ``i``'s image and label file written; returns its number of boxes."""
    w, h, objects = _saved_image_objects(images_dir, names, "write_yolo", i, image, target)
    lines = []
    for _, (x1, y1, x2, y2), label in objects:
        (cx, bw), (cy, bh) = _yolo_extent(x1, x2, w), _yolo_extent(y1, y2, h)
        lines.append(f"{label - 1} {cx} {cy} {bw} {bh}")
    (labels_dir / f"{i:06d}.txt").write_text("".join(line + "\n" for line in lines))
    return len(lines)


def write_yolo(dataset: Dataset, out_dir: PathLike, split: str,
               progress: Optional[Callable[[int], None]] = None, *, workers: int = 0) -> Path:
    """Write a detection dataset in the Ultralytics YOLO layout: ``out_dir/images/<split>/
    <index:06d>.png``, ``out_dir/labels/<split>/<index:06d>.txt`` (``class cx cy w h`` per object,
    normalised, 6 decimals, each in [0, 1] and so are the edges ``cx -/+ w / 2`` a reader computes
    from them; class = label - 1; an empty file for a negative) and ``out_dir/data.yaml``
    (``path`` absolute, ``train: images/train``, ``val: images/val``, other written splits,
    ``nc``, ``names``). Atomic per split: labels, then images, then data.yaml.

    Args:
        dataset: items ``(image, target)`` as :class:`DigitScenes` returns them, and ``.classes``.
        out_dir: the output folder (created).
        split: the split name (``train``, ``val``).
        progress: called with 1 after each image (e.g. a tqdm bar's ``update``).
        workers: worker processes reading the items and writing the files (0: this process).

    Returns:
        The data.yaml file.
    """
    from ..weights.io import atomic_write

    _check_split(split)
    _check_workers(workers, "write_yolo")
    names, _ = _dataset_classes(dataset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-yolo-{split}-", dir=out))
    try:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        for _ in _records(dataset, partial(_yolo_record, tmp / "images", tmp / "labels", names), progress, workers):
            pass
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


def _voc_palette(dataset: Dataset, who: str) -> tuple[list[str], list[tuple[int, int, int]]]:
    """The dataset's class names and colours (``dataset.colors`` or VOC's colour map)."""
    names = list(getattr(dataset, "classes", None) or [])
    if not names or len(names) > IGNORE_INDEX:
        raise ValueError(f"{who}: a dataset to write needs .classes, 1 to {IGNORE_INDEX} class names with "
                         f"the background first, got {getattr(dataset, 'classes', None)!r}")
    colors = getattr(dataset, "colors", None)
    if colors is None or len(colors) != len(names):
        colors = voc_colormap(len(names))
    return names, [tuple(int(v) for v in c) for c in colors]


def _save_mask(mask: torch.Tensor, path: Path, palette: Sequence[int], num_classes: int, where: str) -> None:
    """An (H, W) class-index mask as a palette PNG (mode "P"), its values checked."""
    from PIL import Image

    m = torch.as_tensor(mask)
    if m.ndim != 2 or m.is_floating_point():
        raise ValueError(f"{where}: expected an integer mask (H, W), got {m.dtype} {tuple(m.shape)}")
    a = _numpy(m)
    bad = a[(a < 0) | ((a >= num_classes) & (a != IGNORE_INDEX))]
    if bad.size:
        raise ValueError(f"{where}: mask values {np.unique(bad).tolist()[:20]} outside the {num_classes} "
                         f"classes (valid: 0..{num_classes - 1}, and {IGNORE_INDEX} = ignore)")
    im = Image.fromarray(a.astype(np.uint8))
    im.putpalette(palette)
    im.save(path, optimize=True)


def _voc_record(images_dir: Path, masks_dir: Path, palette: Sequence[int], num_classes: int,
                image_format: str, i: int, image, mask) -> int:
    """Item ``i``'s image and mask written; returns ``i``."""
    if torch.as_tensor(mask).shape != image.shape[-2:]:
        raise ValueError(f"write_voc: item {i}: mask {tuple(mask.shape)} is not the image's size "
                         f"{tuple(image.shape[-2:])}")
    _save_image(image, images_dir / f"{i:06d}.{image_format}")
    _save_mask(mask, masks_dir / f"{i:06d}.png", palette, num_classes, f"write_voc: item {i}")
    return i


def write_voc(dataset: Dataset, out_dir: PathLike, split: str,
              progress: Optional[Callable[[int], None]] = None, *, image_format: str = "png",
              workers: int = 0) -> Path:
    """Write a segmentation dataset as a VOC-style folder (read back by
    :class:`~mobilenets.data.VocSegmentation`): item ``i`` has the id ``<split>/<i:06d>``,
    its image ``out_dir/JPEGImages/<split>/<i:06d>.png`` and its mask
    ``out_dir/SegmentationClass/<split>/<i:06d>.png``, a palette PNG (mode "P", pixel value =
    class index, 255 = ignore, colours ``dataset.colors`` or VOC's colour map);
    ``out_dir/ImageSets/Segmentation/<split>.txt`` lists the ids and ``out_dir/labelmap.txt`` the
    classes (``name:r,g,b::``, background first).

    Images are PNG by default: lossless, so a written then read dataset gives back exactly the
    8-bit images (and always exactly the masks); ``image_format="jpg"`` writes JPEG (quality 95)
    for tools that only read ``JPEGImages/<id>.jpg`` (torchvision's ``VOCSegmentation``), at the
    price of compression artefacts. Ids carry the split as a folder so that each split's files
    sit in their own folders: atomic per split as :func:`write_coco` (images and masks go to a
    temporary folder in ``out_dir``, are renamed into place when complete, then labelmap.txt and
    the split list are written atomically), and an existing split is replaced whole.

    Args:
        dataset: items ``(image, mask)``: float (3, H, W) in [0, 1] (or uint8) and integer (H, W)
            masks with values in ``[0, len(classes))`` or 255; ``.classes`` (background first).
        out_dir: the output folder (created).
        split: the split name (``train``, ``val``).
        progress: called with 1 after each image (e.g. a tqdm bar's ``update``).
        image_format: ``"png"`` or ``"jpg"``.
        workers: worker processes reading the items and writing the files (0: this process).

    Returns:
        The split list ``ImageSets/Segmentation/<split>.txt``.

    Raises:
        ValueError: a mask value outside the classes (naming the item), or ``out_dir`` already
            holds other splits with a different class list.
    """
    from ..weights.io import atomic_write

    _check_split(split)
    if image_format not in ("png", "jpg"):
        raise ValueError(f"write_voc: image_format must be 'png' or 'jpg', got {image_format!r}")
    _check_workers(workers, "write_voc")
    names, colors = _voc_palette(dataset, "write_voc")
    labelmap = format_labelmap(names, colors)
    out = Path(out_dir)
    sets = out / "ImageSets" / "Segmentation"
    others = sorted(p.stem for p in sets.glob("*.txt")) if sets.is_dir() else []
    others = [o for o in others if o != split]
    if others and (out / LABELMAP).is_file():
        have, _ = read_labelmap(out / LABELMAP)
        if have != parse_labelmap(labelmap)[0]:
            raise ValueError(f"write_voc: {out} already holds the splits {others} with the classes {have}, "
                             f"not {names}; write into another folder (or delete those splits)")
    palette = [v for c in colors for v in c]
    rest = voc_colormap(256)[len(colors):]
    palette += [v for c in rest for v in c]
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-voc-{split}-", dir=out))
    try:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        record = partial(_voc_record, tmp / "images", tmp / "masks", palette, len(names), image_format)
        ids = [f"{split}/{i:06d}" for i in _records(dataset, record, progress, workers)]
        _swap_in(tmp / "masks", out / "SegmentationClass" / split)
        _swap_in(tmp / "images", out / "JPEGImages" / split)
        atomic_write(out / LABELMAP, lambda t: Path(t).write_text(labelmap, encoding="utf-8"))
        sets.mkdir(parents=True, exist_ok=True)
        text = "".join(f"{i}\n" for i in ids)
        return atomic_write(sets / f"{split}.txt", lambda t: Path(t).write_text(text, encoding="utf-8"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- loading --------------------------------------------------------------------------------------
