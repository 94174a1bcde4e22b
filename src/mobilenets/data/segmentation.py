"""Semantic segmentation data: :class:`SceneSegmentation` (digit-scenes as class maps),
:func:`open_segmentation_data` and :func:`segmentation_collate`.

Every segmentation dataset yields ``(image, mask)``: ``image`` float32 (3, H, W) in [0, 1],
``mask`` int64 (H, W) with class indices (0 the background) and :data:`IGNORE_INDEX` (255) for
pixels that count for nothing; ``dataset.classes`` lists the class names, background first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch.utils.data import Dataset

from .common import DatasetError
from .files import PathLike
from .scenes import DIGIT_CLASSES, DigitScenes, semantic_mask
from .voc import IGNORE_INDEX, VocSegmentation, is_voc_folder, voc_colormap

__all__ = ["SceneSegmentation", "open_segmentation_data", "segmentation_collate"]


class SceneSegmentation(Dataset):
    """digit-scenes as semantic segmentation: item ``i`` is :class:`DigitScenes` item ``i``'s
    image and its :func:`semantic_mask` (digit ``d`` -> class ``d + 1``, 0 the background; where
    digits overlap, the later one covers the earlier), so the scenes' guarantees hold unchanged:
    item ``i`` depends only on ``(seed, split, i)``, and val scenes paste only held-out digits.

    Args:
        split: ``"train"`` or ``"val"``.
        size: canvas size, an int (square) or ``(H, W)``.
        num_images: how many images (default: 2000 for train, 500 for val).
        seed: the scene seed.
        transforms: a callable on ``(image, mask)``, e.g.
            :func:`mobilenets.data.segmentation_transforms`.
        **scene_kw: other :class:`DigitScenes` options (``digits_per_image``, ``digit_size``,
            ``color``, ``noise``).
    """

    classes: list[str] = DIGIT_CLASSES
    #: one colour per class for drawing (VOC's colour map)
    colors: list[tuple[int, int, int]] = voc_colormap(len(DIGIT_CLASSES))
    mean = DigitScenes.mean
    ignore_index = IGNORE_INDEX

    def __init__(self, split: str = "train", size: Union[int, Sequence[int]] = 320,
                 num_images: Optional[int] = None, seed: int = 0, transforms: Optional[Callable] = None,
                 **scene_kw: Any) -> None:
        self.scenes = DigitScenes(split, size=size, num_images=num_images, seed=seed, **scene_kw)
        self.split, self.size, self.seed = self.scenes.split, self.scenes.size, self.scenes.seed
        self.transforms = transforms

    @property
    def num_classes(self) -> int:
        """Classes including the background (11)."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.scenes)

    def __repr__(self) -> str:
        h, w = self.size
        return (f"SceneSegmentation(split={self.split!r}, size=({h}, {w}), num_images={len(self)}, "
                f"seed={self.seed})")

    def source_digits(self, index: int) -> list[int]:
        """The scikit-learn digits pasted in item ``index`` (see :meth:`DigitScenes.source_digits`)."""
        return self.scenes.source_digits(index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.scenes)
        if not -n <= index < n:
            raise IndexError(f"SceneSegmentation index {index} out of range for {n} images")
        image, target = self.scenes.generate(index % n)
        mask = semantic_mask(target)
        if self.transforms is not None:
            image, mask = self.transforms(image, mask)
        return image, mask


def open_segmentation_data(spec: PathLike, split: str = "train", transforms: Optional[Callable] = None,
                           **scene_kw: Any) -> Dataset:
    """The segmentation dataset that ``spec`` names.

    Args:
        spec: ``"digit-scenes"`` (:class:`SceneSegmentation`) or a VOC-style folder
            (:class:`VocSegmentation`: ``JPEGImages/``, ``SegmentationClass/``,
            ``ImageSets/Segmentation/<split>.txt``).
        split: ``train`` or ``val`` (any split list name for a folder).
        transforms: a callable on ``(image, mask)``, e.g. :func:`segmentation_transforms`.
        **scene_kw: for digit-scenes, ``size``, ``seed``, ``num_images`` (and the other
            :class:`DigitScenes` options); for a folder, ``check_images``.

    Raises:
        DatasetError: ``spec`` is neither (a COCO / YOLO detection folder included: the message
            says what a segmentation folder must hold).
    """
    if str(spec) == "digit-scenes":
        return SceneSegmentation(split, transforms=transforms, **scene_kw)
    expected = ("expected 'digit-scenes' or a VOC-style segmentation folder: JPEGImages/<id>.jpg|.png, "
                "SegmentationClass/<id>.png (class-index masks, 255 = ignore), ImageSets/Segmentation/"
                "<split>.txt (one id per line), optional labelmap.txt; `mobilenets data digit-scenes "
                "--format voc --out DIR` writes one")
    p = Path(spec)
    if p.is_dir():
        if is_voc_folder(p):
            scene_only = sorted(set(scene_kw) & {"size", "seed", "num_images"})
            if scene_only:
                raise ValueError(f"segmentation data {str(spec)!r}: {', '.join(scene_only)} apply to "
                                 f"digit-scenes only, not to a folder")
            return VocSegmentation(p, split, transforms=transforms, **scene_kw)
        found = sorted(q.name for q in p.iterdir())
        what = ("a COCO detection folder (annotations/*.json)" if any((p / "annotations").glob("*.json"))
                else "a YOLO detection folder (data.yaml)" if (p / "data.yaml").is_file() else None)
        nested = [q.name for q in sorted(p.iterdir()) if q.is_dir() and is_voc_folder(q)]
        hint = f"; its sub-folder {nested[0]!r} is one: pass {str(p / nested[0])!r}" if nested else ""
        raise DatasetError(f"segmentation data {str(spec)!r}: " + (f"{what}, which has boxes, not class masks; "
                           if what else "") + f"{expected}; the folder has {found[:10] or 'nothing'}{hint}")
    why = "no such file or folder" if not p.exists() else "a file, not a folder"
    raise DatasetError(f"segmentation data {str(spec)!r}: {why}; {expected}")


def segmentation_collate(batch: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """A DataLoader ``collate_fn`` for segmentation: ``(images (N, 3, H, W) float, masks (N, H, W)
    int64)``. Items of different sizes are padded at the bottom and right to the largest height
    and width: images with 0, masks with :data:`IGNORE_INDEX` (so the padding is never scored).

    Args:
        batch: the ``(image, mask)`` items of one batch: float images (3, H, W) and integer masks
            (H, W) of the same size.
    """
    if not batch:
        raise ValueError("segmentation_collate: an empty batch")
    c = batch[0][0].shape[0] if batch[0][0].ndim == 3 else 3
    for k, (image, mask) in enumerate(batch):
        if image.ndim != 3 or not image.is_floating_point() or image.shape[0] != c:
            raise ValueError(f"segmentation_collate: item {k}: expected a float image ({c}, H, W) (as "
                             f"item 0), got {image.dtype} {tuple(image.shape)}")
        if mask.shape != image.shape[-2:] or mask.is_floating_point() or mask.dtype == torch.bool:
            raise ValueError(f"segmentation_collate: item {k}: expected an integer mask (H, W) = "
                             f"{tuple(image.shape[-2:])}, got {mask.dtype} {tuple(mask.shape)}")
    h = max(int(im.shape[-2]) for im, _ in batch)
    w = max(int(im.shape[-1]) for im, _ in batch)
    images = batch[0][0].new_zeros((len(batch), c, h, w))
    masks = torch.full((len(batch), h, w), IGNORE_INDEX, dtype=torch.int64)
    for k, (image, mask) in enumerate(batch):
        images[k, :, :image.shape[-2], :image.shape[-1]] = image
        masks[k, :mask.shape[-2], :mask.shape[-1]] = mask
    return images, masks
