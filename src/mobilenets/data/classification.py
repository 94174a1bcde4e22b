"""Datasets and transforms for training: ``digits`` and ``digit-clutter`` (built in),
``imagefolder``, ``fake``.

* ``digits``: scikit-learn's 1797 handwritten digits (8x8, 17 grey levels), upscaled
  (bilinear) to ``img_size``, replicated to RGB, split into train/val with a fixed,
  stratified, seeded split.
* ``digit-clutter``: the harder built-in task (:class:`~mobilenets.data.clutter.DigitClutter`):
  the largest of several rotated, coloured digits among fragments, blur and noise, generated at
  ``img_size`` from the recipe's ``seed`` (``scene_images`` / ``scene_val_images`` images;
  the bundle's ``heldout`` split as many as val), source digits never shared between splits.
* ``imagefolder``: ``root/<class>/*.jpg`` (a held-out share is split off, stratified), or
  ``root/train/<class>/`` + ``root/val/<class>/``. Unreadable images are skipped with one
  warning and counted (``dataset.skipped``).
* ``fake``: random images for throughput measurements.

Transforms use ``torchvision.transforms.v2``; the digits, image reading and the evaluation
transform live in :mod:`mobilenets.data`, shared with deployment. Batch-level MixUp / CutMix come from
:func:`batch_mixer`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch.utils.data import Dataset

from .clutter import CLUTTER_CLASSES, DigitClutter
from .common import (IMG_EXTENSIONS, DataBundle, DatasetError, load_digits_tensors, open_image, read_rgb,
                     stratified_split)
from .common import eval_transform as _eval_transform

__all__ = ["BUILTIN_DATASETS", "IMG_EXTENSIONS", "DataBundle", "DatasetError", "FakeDataset", "ImageFolderDataset", "Subset",
           "TensorImageDataset", "batch_mixer", "build_datasets", "check_classes", "eval_transform",
           "load_digits_tensors", "stratified_split", "train_transform"]

#: The classification datasets built in (no files): each is a ``--data`` value wherever ``digits``
#: is (``mobilenets train / eval``), the rest of ``--data`` being an image folder.
BUILTIN_DATASETS = ("digits", "digit-clutter", "fake")


def check_classes(labels: Sequence[int], num_classes: int, what: str) -> None:
    """Raise :class:`DatasetError` for an empty or single-class dataset."""
    if len(labels) == 0:
        raise DatasetError(f"{what}: no images found")
    present = sorted(set(int(y) for y in labels))
    if num_classes < 2 or len(present) < 2:
        raise DatasetError(f"{what}: need at least 2 classes to train a classifier, found "
                           f"{len(present)} ({len(labels)} images)")


class TensorImageDataset(Dataset):
    """Images held in memory as a uint8 tensor (N, 3, H, W) + labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: list[str],
                 transform: Optional[Callable] = None):
        self.images, self.labels, self.classes = images, labels, classes
        self.transform = transform

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>``; unreadable or corrupt files are skipped and counted.

    Every file is opened and verified once when the dataset is built, so a bad image is
    reported up front rather than crashing an epoch.
    """

    def __init__(self, root: str | os.PathLike, transform: Optional[Callable] = None,
                 classes: Optional[list[str]] = None, verify: bool = True):

        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        found = sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        self.classes = list(classes) if classes is not None else found
        idx = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = []
        self.skipped: list[str] = []
        for c in found:
            if c not in idx:
                raise DatasetError(f"{self.root}: class folder {c!r} is not one of the model's classes "
                                   f"{self.classes[:10]}")
            for dirpath, _, files in sorted(os.walk(self.root / c)):
                for fn in sorted(files):
                    if not fn.lower().endswith(IMG_EXTENSIONS):
                        continue
                    path = os.path.join(dirpath, fn)
                    if verify:
                        try:
                            with open_image(path) as im:
                                im.verify()
                            read_rgb(path)  # verify() misses truncated data
                        except Exception:  # noqa: BLE001 - verify() raises many types for bad files
                            self.skipped.append(path)
                            continue
                    self.samples.append((path, idx[c]))
        if self.skipped:
            warnings.warn(f"{self.root}: skipped {len(self.skipped)} unreadable image(s), e.g. "
                          f"{self.skipped[0]}", stacklevel=2)
        self.targets = [y for _, y in self.samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, y = self.samples[i]
        x = read_rgb(path)
        if self.transform is not None:
            x = self.transform(x)
        return x, y


class FakeDataset(Dataset):
    """Deterministic random uint8 images (the image depends only on the index)."""

    def __init__(self, n: int, num_classes: int, img_size: int, transform: Optional[Callable] = None):
        self.n, self.num_classes, self.img_size, self.transform = n, num_classes, img_size, transform
        self.classes = [str(i) for i in range(num_classes)]
        self.targets = [i % num_classes for i in range(n)]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        x = torch.randint(0, 256, (3, self.img_size, self.img_size), dtype=torch.uint8, generator=g)
        if self.transform is not None:
            x = self.transform(x)
        return x, self.targets[i]


class Subset(Dataset):
    def __init__(self, base: Dataset, indices: Sequence[int], transform: Optional[Callable] = None):
        self.base, self.indices, self.transform = base, list(indices), transform
        self.classes = base.classes
        self.targets = [base.targets[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        x, y = self.base[self.indices[i]]
        if self.transform is not None:
            x = self.transform(x)
        return x, y


# --- transforms ----------------------------------------------------------------------------------
def train_transform(r) -> Callable:
    """RandomResizedCrop, flip, Auto/Rand/TrivialAugment, normalize, RandomErasing (uint8 in)."""
    from torchvision.transforms import v2

    t: list = [v2.RandomResizedCrop(r.img_size, scale=(r.scale_min, 1.0), ratio=tuple(r.ratio), antialias=True)]
    if r.hflip > 0:
        t.append(v2.RandomHorizontalFlip(r.hflip))
    if r.auto_augment == "autoaugment":
        t.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET))
    elif r.auto_augment == "randaugment":
        t.append(v2.RandAugment(num_ops=r.ra_num_ops, magnitude=r.ra_magnitude))
    elif r.auto_augment == "trivialaugment":
        t.append(v2.TrivialAugmentWide())
    t += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(r.mean), list(r.std))]
    if r.reprob > 0:
        t.append(v2.RandomErasing(p=r.reprob, value=0))
    return v2.Compose(t)


def eval_transform(r) -> Callable:
    """Resize the short side to ``img_size / crop_pct``, center crop ``img_size``, normalize
    (:func:`mobilenets.data.eval_transform`, the one calibration uses too)."""
    return _eval_transform(r.img_size, r.crop_pct, r.mean, r.std)


def batch_mixer(r, num_classes: int) -> Optional[Callable]:
    """MixUp and/or CutMix on a batch (one picked at random when both are on); returns soft
    targets. ``None`` when both are off."""
    from torchvision.transforms import v2

    ops = []
    if r.mixup > 0:
        ops.append(v2.MixUp(alpha=r.mixup, num_classes=num_classes))
    if r.cutmix > 0:
        ops.append(v2.CutMix(alpha=r.cutmix, num_classes=num_classes))
    if not ops:
        return None
    return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)


# --- building ------------------------------------------------------------------------------------
def build_datasets(r, train_tf: Optional[Callable] = None,
                   val_tf: Optional[Callable] = None) -> DataBundle:
    """Train/val datasets for a recipe; raises :class:`DatasetError` for an empty or
    single-class dataset (before any training starts)."""
    train_tf = train_transform(r) if train_tf is None else train_tf
    val_tf = eval_transform(r) if val_tf is None else val_tf
    if r.dataset == "digits":
        x, y = load_digits_tensors(r.img_size)
        classes = [str(i) for i in range(10)]
        tr, va = stratified_split(y.tolist(), r.val_fraction, r.seed)
        return DataBundle(TensorImageDataset(x[tr], y[tr], classes, train_tf),
                          TensorImageDataset(x[va], y[va], classes, val_tf), classes)
    if r.dataset == "digit-clutter":
        def split(name: str, n: int, tf: Callable) -> DigitClutter:
            return DigitClutter(name, r.img_size, n, r.seed, tf)
        return DataBundle(split("train", r.scene_images, train_tf), split("val", r.scene_val_images, val_tf),
                          list(CLUTTER_CLASSES), heldout=split("heldout", r.scene_val_images, val_tf))
    if r.dataset == "fake":
        n_val = max(r.fake_classes, int(r.fake_samples * r.val_fraction))
        full = FakeDataset(r.fake_samples + n_val, r.fake_classes, r.img_size)
        idx = list(range(len(full)))
        return DataBundle(Subset(full, idx[:r.fake_samples], train_tf),
                          Subset(full, idx[r.fake_samples:], val_tf), full.classes)
    if r.dataset == "imagefolder":
        root = Path(r.data_dir or "")
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root} (expected a folder of <class>/ image "
                                    f"folders, or one of the built-in datasets {', '.join(BUILTIN_DATASETS)})")
        if (root / "train").is_dir() and (root / "val").is_dir():
            tr = ImageFolderDataset(root / "train", train_tf)
            check_classes(tr.targets, len(tr.classes), str(root / "train"))
            va = ImageFolderDataset(root / "val", val_tf, classes=tr.classes)
            if len(va) == 0:
                raise DatasetError(f"{root / 'val'}: no images found")
            return DataBundle(tr, va, tr.classes, len(tr.skipped) + len(va.skipped))
        full = ImageFolderDataset(root)
        check_classes(full.targets, len(full.classes), str(root))
        tr_idx, va_idx = stratified_split(full.targets, r.val_fraction, r.seed)
        if not va_idx:
            raise DatasetError(f"{root}: too few images for a validation split (need >= 2 per class)")
        return DataBundle(Subset(full, tr_idx, train_tf), Subset(full, va_idx, val_tf), full.classes,
                          len(full.skipped))
    raise ValueError(f"unknown dataset {r.dataset!r}; expected one of {BUILTIN_DATASETS + ('imagefolder',)}")
