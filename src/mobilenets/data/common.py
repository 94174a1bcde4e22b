"""Images and their evaluation transform, shared by training and deployment.

Training (:mod:`mobilenets.data.classification`) and INT8 calibration (:mod:`mobilenets.deploy.calibration`)
must see images exactly as the model will at inference, and deployment must not depend on the
training package: both take the built-in digits, the image files and the one evaluation
transform from here.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence, Union

import torch
from torch.utils.data import Dataset

# the ImageNet constants are defined with the ModelInfo record whose defaults they are
from ..models.info import IMAGENET_CROP_PCT, IMAGENET_MEAN, IMAGENET_STD, ModelInfo  # noqa: F401  (re-exported)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")

# The digits are grey strokes on black, upscaled and never cropped: 0.5 maps [0, 1] to [-1, 1].
DIGITS_MEAN = DIGITS_STD = (0.5, 0.5, 0.5)
DIGITS_CROP_PCT = 1.0
# The held-out share and seed of the digits split: calibration draws from the same training split.
DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


class DatasetError(ValueError):
    """A dataset that cannot be trained on (empty, one class, unreadable)."""


@dataclass
class DataBundle:
    """A task's training and validation sets, its class names, how many unreadable images the
    readers skipped and, where the data has one, a ``heldout`` split disjoint from both (for
    what must be judged on data the weights never trained on, e.g. the architecture search's
    controller; ``None`` otherwise)."""

    train: Dataset
    val: Dataset
    classes: list[str]
    skipped: int = 0
    heldout: Optional[Dataset] = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val): every class is split in the same proportion, deterministically
    for a given seed (each class is shuffled with its own seeded generator)."""
    labels = [int(y) for y in labels]
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    train, val = [], []
    for c in sorted(by_class):
        idx = by_class[c]
        g = torch.Generator().manual_seed(seed * 1000003 + c)
        perm = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
        n_val = int(round(len(idx) * val_fraction))
        if len(idx) > 1:
            n_val = min(max(n_val, 1), len(idx) - 1)
        else:
            n_val = 0
        val += perm[:n_val]
        train += perm[n_val:]
    return sorted(train), sorted(val)


def load_digits_tensors(img_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as uint8 RGB (N, 3, img_size, img_size) and labels."""
    from ..extras import require
    load_digits = require("sklearn.datasets", "the built-in digits data (scikit-learn's)").load_digits

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N,1,8,8) in [0,1]
    x = torch.nn.functional.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return x, torch.as_tensor(d.target, dtype=torch.long)


class ImageReadError(OSError):
    """An image file that does not decode (the cause is chained)."""

    def __init__(self, path: Union[str, os.PathLike], cause: BaseException):
        super().__init__(f"cannot decode image {os.fspath(path)!r} ({type(cause).__name__}: {cause})")


@contextlib.contextmanager
def open_image(path: Union[str, os.PathLike]) -> Iterator:
    """``PIL.Image.open(path)`` as a context manager, every failure to decode an ``OSError``.

    PIL raises ``OSError`` for most bad files but ``SyntaxError``, ``ValueError`` or
    ``DecompressionBombError`` for some, and a patched opener anything: importing Ultralytics replaces
    ``PIL.Image.open`` with one that, on a file PIL cannot identify, installs a HEIF plugin and raises
    ``ModuleNotFoundError`` where it cannot. Callers catch ``OSError`` (``FileNotFoundError`` stays
    itself), so a corrupt file is skipped and counted whoever opened it."""
    from PIL import Image

    try:
        im = Image.open(path)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - see above
        raise ImageReadError(path, e) from e
    with im:
        yield im


def read_rgb(path: Union[str, os.PathLike]) -> torch.Tensor:
    """An image file as a uint8 RGB tensor (3, H, W); a file that does not decode raises ``OSError``."""
    from torchvision.transforms.v2 import functional as F

    with open_image(path) as im:
        try:
            return F.pil_to_tensor(im.convert("RGB"))
        except OSError:
            raise
        except Exception as e:  # noqa: BLE001 - a truncated or lying file fails only on load
            raise ImageReadError(path, e) from e


def eval_transform(size: Union[int, Sequence[int]], crop_pct: float, mean: Sequence[float],
                   std: Sequence[float], interpolation: str = "bilinear", crop_mode: str = "center") -> Callable:
    """The evaluation transform, timm's (``timm.data.transforms_imagenet_eval``): resize to
    ``floor(size / crop_pct)`` (per side), take a ``size`` crop (an int or ``(H, W)``), scale to
    [0, 1], normalize. ``crop_mode``:

    - ``"center"``: resize keeping the aspect ratio until both sides reach that size (a square
      size: the shorter side to it), centre crop;
    - ``"squash"``: resize each side to it (aspect ratio not kept), centre crop;
    - ``"border"``: resize keeping the aspect ratio until the longer side reaches it, pad to
      ``size`` with the mean colour, centre crop.

    A PIL image, a uint8 tensor ``(..., C, H, W)`` or an array ``(H, W, C)`` in; a float tensor
    out. On a PIL image the output equals timm's (same resize, same crop, same arithmetic)."""
    from torchvision.transforms import InterpolationMode, v2

    crop = [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size]
    if crop_mode not in ("center", "squash", "border"):
        raise ValueError(f"crop_mode must be one of ('center', 'squash', 'border'), got {crop_mode!r}")
    scale = [math.floor(c / crop_pct) for c in crop]
    mode = InterpolationMode(interpolation)
    if crop_mode == "squash":
        steps = [v2.Resize(scale, interpolation=mode, antialias=True), v2.CenterCrop(crop)]
    elif crop_mode == "border":
        steps = [_ResizeKeepRatio(scale, mode, longest=True), _CenterCropOrPad(crop, mean)]
    elif scale[0] == scale[1]:
        steps = [v2.Resize(scale[0], interpolation=mode, antialias=True), v2.CenterCrop(crop)]
    else:
        steps = [_ResizeKeepRatio(scale, mode, longest=False), v2.CenterCrop(crop)]
    return v2.Compose(steps + [_ToFloat(), v2.Normalize(list(mean), list(std))])


class _ResizeKeepRatio:
    """Resize by one factor on both sides: the smallest (``longest=False``) or largest one that
    brings a side to ``size`` (timm's ``ResizeKeepRatio``: each side ``round(side / ratio)``)."""

    def __init__(self, size: Sequence[int], mode, longest: bool):
        self.size, self.mode, self.longest = list(size), mode, longest

    def __repr__(self) -> str:
        return f"ResizeKeepRatio(size={self.size}, interpolation={self.mode.value}, longest={self.longest})"

    def __call__(self, img):
        from torchvision.transforms.v2 import functional as F

        h, w = F.get_size(img)
        ratios = (h / self.size[0], w / self.size[1])
        r = max(ratios) if self.longest else min(ratios)
        return F.resize(img, [round(h / r), round(w / r)], interpolation=self.mode, antialias=True)


class _CenterCropOrPad:
    """Pad (centred, with the mean colour) to at least ``size``, then centre crop ``size``
    (timm's ``CenterCropOrPad`` with ``fill = round(255 * mean)``)."""

    def __init__(self, size: Sequence[int], mean: Sequence[float]):
        self.size, self.mean = list(size), list(mean)

    def __repr__(self) -> str:
        return f"CenterCropOrPad(size={self.size}, fill=mean)"

    def __call__(self, img):
        from torchvision.transforms.v2 import functional as F

        h, w = F.get_size(img)
        ch, cw = self.size
        if ch > h or cw > w:
            float_tensor = isinstance(img, torch.Tensor) and img.is_floating_point()
            fill = list(self.mean) if float_tensor else [round(255 * v) for v in self.mean]
            dw, dh = max(cw - w, 0), max(ch - h, 0)
            img = F.pad(img, [dw // 2, dh // 2, (dw + 1) // 2, (dh + 1) // 2], fill=fill)
        return F.center_crop(img, self.size)


class _ToFloat:
    """PIL image / array / uint8 tensor -> float tensor in [0, 1] (``/ 255``, as
    ``torchvision.transforms.functional.to_tensor`` does); a float tensor is left as it is."""

    def __repr__(self) -> str:
        return "ToFloat(/255)"

    def __call__(self, img):
        from torchvision.transforms.v2 import functional as F

        x = img if isinstance(img, torch.Tensor) else F.to_image(img)
        x = x.as_subclass(torch.Tensor)
        return x if x.is_floating_point() else x.to(torch.float32).div(255)


def transform_for(info: ModelInfo) -> Callable:
    """The evaluation transform a model expects, from its
    :class:`~mobilenets.models.info.ModelInfo` (size, crop, mean, std, interpolation, crop mode)."""
    return eval_transform(info.img_size, info.crop_pct, info.mean, info.std, info.interpolation, info.crop_mode)


def default_workers(limit: int = 4) -> int:
    """Worker processes for a parallel job: the CPUs this process may use, at most ``limit``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(limit, cpus))
