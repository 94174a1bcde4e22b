"""Images and their evaluation transform, shared by training and deployment.

Training (:mod:`mobilenets.data.classification`) and INT8 calibration (:mod:`mobilenets.deploy.calibration`)
must see images exactly as the model will at inference, and deployment must not depend on the
training package: both take the built-in digits, the image files and the one evaluation
transform from here.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, Union

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
    """A task's training and validation sets, its class names, and how many unreadable
    images the readers skipped."""

    train: Dataset
    val: Dataset
    classes: list[str]
    skipped: int = 0

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
                   std: Sequence[float], interpolation: str = "bilinear") -> Callable:
    """The evaluation transform: resize the short side to ``max(H, W) / crop_pct``, center crop
    ``size`` (an int or ``(H, W)``), scale to [0, 1], normalize. uint8 images in, float out."""
    from torchvision.transforms import InterpolationMode, v2

    crop = [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size]
    short = int(round(max(crop) / crop_pct))
    mode = InterpolationMode(interpolation)
    return v2.Compose([v2.Resize(short, interpolation=mode, antialias=True), v2.CenterCrop(crop),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def transform_for(info: ModelInfo) -> Callable:
    """The evaluation transform a model expects, from its
    :class:`~mobilenets.models.info.ModelInfo` (size, crop, mean, std, interpolation)."""
    return eval_transform(info.img_size, info.crop_pct, info.mean, info.std, info.interpolation)


def default_workers(limit: int = 4) -> int:
    """Worker processes for a parallel job: the CPUs this process may use, at most ``limit``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(limit, cpus))
