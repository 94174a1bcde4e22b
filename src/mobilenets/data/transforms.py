"""Detection and segmentation augmentations from ``torchvision.transforms.v2``, on
``(image, target)`` and ``(image, mask)`` pairs.

The detection pipeline follows torchvision's SSD reference (photometric distortion, zoom out,
IoU crop) and the segmentation one torchvision's segmentation reference (random resize, pad,
random crop), both without their horizontal flip: a mirrored 2 is not a 2, so no flip of any
kind is used. Boxes travel as ``tv_tensors.BoundingBoxes`` and masks as ``tv_tensors.Mask``, so
every geometric step moves them with the image (masks always resampled nearest-neighbour, so
they keep their class values), and ``SanitizeBoundingBoxes`` drops the boxes a crop made
degenerate together with their ``labels`` and ``masks``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch

from .common import IMAGENET_MEAN
from .voc import IGNORE_INDEX

__all__ = ["detection_transforms", "segmentation_transforms", "to_tv_tensors"]


def to_tv_tensors(image: torch.Tensor, target: dict) -> tuple[Any, dict]:
    """Wrap a plain ``(image, target)`` pair as torchvision tv_tensors: the image as
    ``tv_tensors.Image``, ``boxes`` as XYXY ``tv_tensors.BoundingBoxes`` on the image's canvas,
    ``masks`` (when present) as ``tv_tensors.Mask``; other keys pass unchanged.

    Args:
        image: (3, H, W) tensor.
        target: a dict with ``boxes`` (N, 4) xyxy pixels and optional ``labels`` / ``masks``.
    """
    from torchvision import tv_tensors

    h, w = image.shape[-2:]
    out = dict(target)
    out["boxes"] = tv_tensors.BoundingBoxes(torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4),
                                            format="XYXY", canvas_size=(int(h), int(w)))
    if "masks" in target:
        out["masks"] = tv_tensors.Mask(target["masks"])
    return tv_tensors.Image(image), out


class _ToTVTensors:
    """Step one of the pipelines: :func:`to_tv_tensors` as a callable on ``(image, target)``."""

    def __call__(self, image: torch.Tensor, target: dict) -> tuple[Any, dict]:
        return to_tv_tensors(image, target)

    def __repr__(self) -> str:
        return "ToTVTensors()"


def detection_transforms(train: bool, size: Union[int, Sequence[int], None] = 320,
                         fill: Optional[Sequence[float]] = None, zoom_out: float = 2.0,
                         iou_crop_trials: int = 10):
    """The detection transform on ``(image, target)``: float (3, H, W) images in [0, 1] and
    targets with ``boxes`` (xyxy pixels), ``labels`` and optional ``masks``, in and out (plain
    tensors out, ``boxes`` float32).

    Train: ``RandomPhotometricDistort`` -> ``RandomZoomOut`` (canvas up to ``zoom_out`` x the
    image, filled with ``fill``; half the time) -> ``RandomIoUCrop`` (SSD's crops) -> ``Resize``
    to ``size`` (together the scale jitter: digits shrink by zoom out and grow by the crop)
    -> ``ClampBoundingBoxes`` -> ``SanitizeBoundingBoxes`` (drops degenerate boxes with their
    labels and masks). No flips. Val: ``Resize`` to ``size`` only (nothing when ``size`` is None).

    Args:
        train: the augmenting pipeline (True) or the evaluation one (False).
        size: output size, an int (square) or ``(H, W)``; None keeps the input size (then train
            outputs vary in size).
        fill: per-channel fill of the zoom-out canvas (default the ImageNet mean;
            :attr:`DigitScenes.mean <mobilenets.data.DigitScenes.mean>` for the scenes).
        zoom_out: the largest zoom-out factor (>= 1; 1 disables zoom out).
        iou_crop_trials: crops ``RandomIoUCrop`` tries per drawn minimum IoU before drawing
            another (torchvision's default is 40; with boxes much smaller than the image the
            high-IoU options rarely succeed, and 10 trials make the step ~3x cheaper, ~3 ms
            instead of ~10 ms on a 320x320 scene, for a slightly different mix of crops).
    """
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    if size is not None:
        size = [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size]
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"detection_transforms: size must be a positive int or (H, W), got {size}")
    if zoom_out < 1:
        raise ValueError(f"detection_transforms: zoom_out must be >= 1, got {zoom_out}")
    fill = [float(f) for f in (IMAGENET_MEAN if fill is None else fill)]
    steps: list = [_ToTVTensors()]
    if train:
        steps += [v2.RandomPhotometricDistort(p=0.5)]
        if zoom_out > 1:
            steps += [v2.RandomZoomOut(fill={tv_tensors.Image: fill, tv_tensors.Mask: 0},
                                       side_range=(1.0, float(zoom_out)), p=0.5)]
        steps += [v2.RandomIoUCrop(trials=int(iou_crop_trials))]
    if size is not None:
        steps += [v2.Resize(size, antialias=True)]
    if train:
        steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes()]
    steps += [v2.ToPureTensor()]
    return v2.Compose(steps)


class _ToSegTensors:
    """Step one of the segmentation pipelines: the image as ``tv_tensors.Image``, the mask as an
    int64 ``tv_tensors.Mask``."""

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[Any, Any]:
        from torchvision import tv_tensors

        return tv_tensors.Image(image), tv_tensors.Mask(torch.as_tensor(mask).to(torch.int64))

    def __repr__(self) -> str:
        return "ToSegTensors()"


def segmentation_transforms(train: bool, size: int, fill: Optional[Sequence[float]] = None, *,
                            scale: tuple[float, float] = (0.5, 2.0), crop: Optional[int] = None):
    """The segmentation transform on ``(image, mask)``: a float (3, H, W) image in [0, 1] and an
    integer (H, W) mask in, plain tensors out (the mask int64, its values those it came with,
    plus 255 = ignore where padded).

    Train (torchvision's segmentation reference, without its flip):
    ``RandomPhotometricDistort`` -> ``RandomResize`` of the shorter side to a random length in
    ``[scale[0] * size, scale[1] * size]`` (the scale jitter) -> ``RandomCrop`` of
    ``crop x crop`` (default ``size``; torchvision crops 480 of a 520 base), padding a side
    shorter than it first: the image with ``fill``, the mask with 255 (ignored by the loss and
    the metrics). A padded image lies wholly inside the crop, at a random place. Output always
    ``crop x crop``. No flips.

    Eval: ``Resize`` of the shorter side to ``size`` (the aspect ratio is kept, as torchvision's
    segmentation reference and its weights' transforms do; outputs of a folder of varied
    sizes differ in the longer side, which :func:`segmentation_collate` pads). Masks are
    resampled nearest-neighbour, never interpolated. An image whose shorter side already is
    ``size`` passes unchanged (digit-scenes at their native size).

    Args:
        train: the augmenting pipeline (True) or the evaluation one (False).
        size: the crop side (train) and the shorter side (eval), in pixels.
        fill: per-channel fill of the train padding (default the ImageNet mean;
            :attr:`SceneSegmentation.mean <mobilenets.data.SceneSegmentation.mean>` for the scenes).
        scale: the range of the random resize, as multiples of ``size``.
        crop: the train crop side (default ``size``).
    """
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"segmentation_transforms: size must be a positive int, got {size!r}")
    crop = size if crop is None else crop
    if isinstance(crop, bool) or not isinstance(crop, int) or crop < 1:
        raise ValueError(f"segmentation_transforms: crop must be a positive int, got {crop!r}")
    lo, hi = (float(s) for s in scale)
    if not 0 < lo <= hi:
        raise ValueError(f"segmentation_transforms: scale must be (min, max) with 0 < min <= max, got {scale!r}")
    fill = [float(f) for f in (IMAGENET_MEAN if fill is None else fill)]
    steps: list = [_ToSegTensors()]
    if train:
        shortest, longest = max(1, round(lo * size)), max(1, round(hi * size))
        steps += [v2.RandomPhotometricDistort(p=0.5),
                  v2.RandomResize(shortest, longest + 1, antialias=True),  # draws from [min, max)
                  v2.RandomCrop(crop, pad_if_needed=True,
                                fill={tv_tensors.Image: fill, tv_tensors.Mask: IGNORE_INDEX})]
    else:
        steps += [v2.Resize(size, antialias=True)]
    steps += [v2.ToPureTensor()]
    return v2.Compose(steps)
