"""Calibration data for INT8 quantization: images drawn from our datasets through the evaluation
transform, and the checks that turn what a user passes (a tensor, a DataLoader) into batches."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch

from ..data import (DIGITS_CROP_PCT, DIGITS_MEAN, DIGITS_SPLIT_SEED, DIGITS_STD, DIGITS_VAL_FRACTION,
                    IMAGENET_CROP_PCT, IMAGENET_MEAN, IMAGENET_STD, IMG_EXTENSIONS, DigitClutter, ImageReadError,
                    eval_transform, load_digits_tensors, read_rgb, stratified_split)

CALIB_SOURCES = ("digits", "digit-clutter", "fake")
#: the sources trained with the digits' normalization (mean = std = 0.5, no crop)
_DIGITS_NORMALIZED = ("digits", "digit-clutter")
NO_CALIBRATION = ("INT8 post-training quantization needs calibration data: pass calibration=<a tensor "
                  "of images (N, C, H, W) or a DataLoader>, e.g. calibration_batches('digits' | 'digit-clutter' | "
                  "'fake' | DIR) (CLI: --calib digits|digit-clutter|fake|DIR)")

Calibration = Union[torch.Tensor, np.ndarray, Iterable]


@dataclass
class CalibrationSet:
    """Calibration images and what building them did (:func:`calibration_set`).

    Attributes:
        images: ``(N, C, H, W)`` float, normalized; ``N`` the images really used.
        source: ``"digits"``, ``"fake"`` or the folder. requested: the count asked for.
        available: images the source offers (the digits training split, the folder's image
            files; ``None``: unlimited, ``"fake"``).
        skipped: ``(file, cause)`` of each unreadable image file passed over.
    """

    images: torch.Tensor
    source: str
    requested: int
    available: Optional[int] = None
    skipped: list = field(default_factory=list)

    def summary(self, limit: int = 3) -> str:
        """What was done, in words: ``calibrated on 47 images from DIR (3 unreadable image
        file(s) skipped: a.jpg (cause), ...; 128 requested (--calib-count), the folder has 50
        image files)``."""
        n = len(self.images)
        notes = []
        if self.skipped:
            shown = ", ".join(f"{Path(f).name} ({why})" for f, why in self.skipped[:limit])
            more = f" and {len(self.skipped) - limit} more" if len(self.skipped) > limit else ""
            notes.append(f"{len(self.skipped)} unreadable image file(s) skipped: {shown}{more}")
        if n < self.requested:
            has = (f"the folder has {self.available} image files" if os.path.isdir(self.source)
                   else f"{self.source} has {self.available} images")
            notes.append(f"{self.requested} requested (--calib-count), {has}")
        return (f"calibrated on {n} image{'' if n == 1 else 's'} from {self.source}"
                + (f" ({'; '.join(notes)})" if notes else ""))


def calibration_batches(data: Union[str, os.PathLike] = "digits", count: int = 128,
                        input_size: Sequence[int] = (224, 224), in_chans: int = 3,
                        mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                        crop_pct: Optional[float] = None, seed: int = 0, interpolation: str = "bilinear",
                        crop_mode: str = "center") -> torch.Tensor:
    """A calibration tensor ``(count, in_chans, H, W)`` (float, normalized) from our datasets,
    through the evaluation transform (resize the short side to ``size / crop_pct``, center crop,
    normalize): :func:`calibration_set`'s images. Unreadable files of a folder are skipped with
    a ``UserWarning`` naming how many.
    """
    found = calibration_set(data, count, input_size, in_chans, mean, std, crop_pct, seed, interpolation, crop_mode)
    if found.skipped:
        warnings.warn(f"{found.source}: skipped {len(found.skipped)} unreadable image(s) while building "
                      f"calibration data", stacklevel=2)
    return found.images


def calibration_set(data: Union[str, os.PathLike] = "digits", count: int = 128,
                    input_size: Sequence[int] = (224, 224), in_chans: int = 3,
                    mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                    crop_pct: Optional[float] = None, seed: int = 0, interpolation: str = "bilinear",
                    crop_mode: str = "center") -> CalibrationSet:
    """Calibration images as :func:`calibration_batches` makes them, with what was done: how many
    images were really used (fewer than ``count`` when the source has fewer) and which files
    were unreadable (:class:`CalibrationSet`; ``summary()`` says it in one line).

    Args:
        data: ``"digits"`` (scikit-learn digits, training split of the ``digits`` recipe, so
            the validation images stay held out), ``"digit-clutter"`` (its training split, drawn
            at the input size: :class:`~mobilenets.data.DigitClutter`), ``"fake"`` (random images; fine for speed
            measurements, not for accuracy) or an image folder (``DIR/<class>/*.jpg``, ``DIR/train/``
            or images directly in ``DIR``).
        count: number of images (fewer if the source has fewer).
        input_size: ``(H, W)`` (or one int).
        in_chans: channels the model expects (1 gives grey images).
        mean, std, crop_pct: normalization and crop; default to the ``digits`` recipe for
            ``digits`` and ``digit-clutter`` (mean = std = 0.5, crop 1.0) and to ImageNet's otherwise. Use the values
            the model was trained with.
        seed: which images are drawn.
        interpolation, crop_mode: the resize and crop of the evaluation transform (a model's
            ``ModelInfo`` says which: timm weights mostly want ``"bicubic"``).
    """
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    if len(input_size) != 2 or min(input_size) < 1:
        raise ValueError(f"input_size must be (H, W), got {tuple(input_size)}")
    if int(count) < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")
    key = str(data)
    digits = key in _DIGITS_NORMALIZED
    mean = tuple((DIGITS_MEAN if digits else IMAGENET_MEAN) if mean is None else mean)
    std = tuple((DIGITS_STD if digits else IMAGENET_STD) if std is None else std)
    crop_pct = (DIGITS_CROP_PCT if digits else IMAGENET_CROP_PCT) if crop_pct is None else crop_pct
    g = torch.Generator().manual_seed(seed)
    h, w = int(input_size[0]), int(input_size[1])
    available, skipped = None, []
    if key == "digit-clutter":
        ds = DigitClutter("train", max(h, w))
        pick = torch.randperm(len(ds), generator=g)[:count].tolist()
        imgs, available = torch.stack([ds.generate(i) for i in pick]), len(ds)
    elif key == "digits":
        x, y = load_digits_tensors(max(h, w))  # as build_datasets: load at the size, then transform
        train_idx, _ = stratified_split(y.tolist(), DIGITS_VAL_FRACTION, DIGITS_SPLIT_SEED)
        pick = torch.tensor(train_idx)[torch.randperm(len(train_idx), generator=g)[:count]]
        imgs, available = x[pick], len(train_idx)
    elif key == "fake":
        imgs = torch.randint(0, 256, (int(count), 3, max(h, w), max(h, w)), dtype=torch.uint8, generator=g)
    else:
        imgs, available, skipped = _folder_images(Path(key), int(count), g)
    if in_chans == 1:
        from torchvision.transforms.v2 import functional as F
        imgs = F.rgb_to_grayscale(imgs)
    elif in_chans != 3:
        if key not in ("digits", "fake"):
            source = key if key in CALIB_SOURCES else "an image folder"
            raise ValueError(f"{source} gives RGB images; cannot make {in_chans}-channel calibration data "
                             f"(expected in_chans 1 or 3)")
        imgs = imgs[:, :1].expand(-1, in_chans, -1, -1)  # grey digits / noise: any channel count
    if len(mean) != in_chans:
        mean, std = (mean[0],) * in_chans, (std[0],) * in_chans
    tf = eval_transform((h, w), crop_pct, mean, std, interpolation, crop_mode)
    return CalibrationSet(tf(imgs).contiguous(), key, int(count),
                          available, skipped)


def _folder_images(root: Path, count: int, g: torch.Generator,
                   common: Optional[int] = 256) -> tuple[Union[torch.Tensor, list], int, list]:
    """``(up to count images, image files found, [(unreadable file, cause), ...])``: the images
    resized and center-cropped to ``common`` and stacked (uint8), or (``common=None``) a list
    of them as read."""
    from torchvision.transforms.v2 import functional as F

    if not root.is_dir():
        raise ValueError(f"calibration data must be one of {list(CALIB_SOURCES)} or an image folder; "
                         f"{str(root)!r} is neither")
    if (root / "train").is_dir():
        root = root / "train"
    files = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"{root}: no images found for calibration (extensions {IMG_EXTENSIONS})")
    order = torch.randperm(len(files), generator=g).tolist()
    out, skipped = [], []
    for i in order:
        if len(out) == count:
            break
        try:
            x = read_rgb(files[i])
        except OSError as e:
            skipped.append((files[i], _cause(e, files[i])))
            continue
        # a common size before stacking; the final resize / crop is the eval transform's
        out.append(x if common is None else F.center_crop(F.resize(x, common, antialias=True), [common, common]))
    if not out:
        raise ValueError(f"{root}: no readable images for calibration ({len(skipped)} image file(s), none "
                         f"decodes; e.g. {skipped[0][0]}: {skipped[0][1]})")
    return (out if common is None else torch.stack(out)), len(files), skipped


def _cause(e: BaseException, path: str) -> str:
    """Why an image did not read, without its path (the caller names the file)."""
    text = str(e.__cause__ if isinstance(e, ImageReadError) and e.__cause__ is not None else e)
    text = text.replace(repr(path), "").replace(path, "").strip(" :")
    return text or type(e).__name__


def _as_batches(calibration: Calibration, shape: tuple, fixed_batch: Optional[int]) -> list[np.ndarray]:
    """Calibration data -> list of float32 arrays to feed, checking channels and size.

    ``shape``: expected ``(C, H, W)``, entries ``None`` when the graph leaves them free.
    """
    if calibration is None:
        raise ValueError(NO_CALIBRATION)
    if isinstance(calibration, (torch.Tensor, np.ndarray)):
        items: Iterable = [calibration]
    elif isinstance(calibration, (str, bytes, os.PathLike)):
        raise ValueError(f"calibration must be image tensors, got the string {str(calibration)!r}; build them "
                         f"with calibration_batches({str(calibration)!r}, count=..., input_size=...)")
    else:
        try:
            items = iter(calibration)
        except TypeError:
            raise ValueError(f"calibration must be a tensor (N, C, H, W) or an iterable of tensors / "
                             f"(images, labels) batches, got {type(calibration).__name__}") from None
    arrays = []
    for item in items:
        if isinstance(item, (tuple, list)) and item and not isinstance(item[0], (int, float)):
            item = item[0]  # (images, labels) from a DataLoader
        if isinstance(item, np.ndarray):
            item = torch.from_numpy(item)
        if not isinstance(item, torch.Tensor):
            raise ValueError(f"calibration batches must be tensors (N, C, H, W) or (images, labels), got "
                             f"{type(item).__name__}")
        if item.ndim == 3:
            item = item.unsqueeze(0)
        want = "(N, " + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        if item.ndim != 4 or any(s is not None and s != g for s, g in zip(shape, item.shape[1:])):
            what = "channels" if item.ndim == 4 and shape[0] is not None and item.shape[1] != shape[0] else "shape"
            raise ValueError(f"calibration images have the wrong {what}: expected {want}, got "
                             f"{tuple(item.shape)}")
        if not item.is_floating_point():
            raise ValueError(f"calibration images must be float tensors normalized as the model expects "
                             f"(got {item.dtype}); calibration_batches(...) does this")
        if len(item):
            arrays.append(item.detach().float().cpu().numpy())
    if not arrays:
        raise ValueError(NO_CALIBRATION + " (it was empty)")
    x = np.concatenate(arrays)
    if not np.isfinite(x).all():
        raise ValueError("calibration images contain NaN or infinite values")
    step = fixed_batch or 16
    if fixed_batch and len(x) < fixed_batch:
        raise ValueError(f"the model's batch size is fixed to {fixed_batch}; give at least that many "
                         f"calibration images (got {len(x)})")
    n = (len(x) // step) * step if fixed_batch else len(x)
    return [np.ascontiguousarray(x[i:i + step]) for i in range(0, n, step)]

