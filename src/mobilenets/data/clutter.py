"""``digit-clutter``: a built-in classification task on which architectures differ.

The ``digits`` task is saturated (every family passes 98 %). Here each image is a 64x64 canvas
(the default; ``size`` scales everything) holding one **target** digit, whose class is the label,
among smaller **distractor** digits and digit **fragments**, over digit-scenes' uneven background
(:class:`~mobilenets.data.scenes.DigitScenes`: a colour gradient, faint strokes and blobs), then
blurred and noised (the defaults; each is an option):

- the target: a side of 45-80 % of the canvas, aspect jitter, rotated up to +-20 degrees (at most
  45: 6 and 9 stay apart), anywhere on the canvas, in a random colour, pasted last so nothing
  covers it;
- distractors: 0-3 whole digits of any class (the target's too), each 30-55 % of the target's
  side (never above 60 %), so "the largest digit" names the label without doubt; they may
  overlap it from below;
- fragments: 0-4 windows of 3-5 source pixels square of other digits at a digit's stroke scale,
  rotated, in random colours (cluttered MNIST's distractor), so strokes alone do not give the class;
- a gaussian blur (sigma up to 0.8 px at 64 px) and per-pixel gaussian noise (sigma up to 0.04).

The label is unambiguous (the one largest digit, whole and on top), but reading it takes
comparing digit sizes across the canvas, ignoring stroke-like clutter, and a rotation-, scale-
and colour-invariant digit reader: capacity and receptive field pay off.

Splits: ``train``, ``heldout`` (for what needs data the weights never trained on, e.g. the
architecture search's controller) and ``val``. Their **source digits never mix**, distractors and
fragments included: ``val`` uses only the digits' own held-out split (the ``digits`` recipe's, as
digit-scenes does, so a backbone trained on digits has never seen a val digit), ``heldout`` a
stratified 20 % of the digits' training split, ``train`` the rest.

Determinism: item ``i`` is drawn from its own generator seeded from ``(seed, split, i)`` (as
digit-scenes), so it is the same in every call, worker and process; labels are ``i % 10``
(balanced exactly, known without drawing). Nothing is cached: an item costs about 2 ms to draw
on one core, so a dataset costs no memory beyond the 1797 source digits.

64 px is the native size because the source digits are 8x8 (a 64 px canvas gives the target 3-6
px per source pixel; more resolution adds no information, only cost), the stride-32 backbones
still end on a 2x2 map (a model must integrate the whole canvas to compare sizes), and an epoch
of 10,000 images stays affordable on 2 CPU cores.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from .common import DIGITS_SPLIT_SEED, stratified_split
from .scenes import DigitScenes, _digit_pools, _item_seed, _randint, _uniform

__all__ = ["DigitClutter", "CLUTTER_CLASSES", "CLUTTER_SPLITS", "HELDOUT_FRACTION"]

CLUTTER_CLASSES: list[str] = [str(d) for d in range(10)]
CLUTTER_SPLITS = ("train", "heldout", "val")
#: Share of the digits' training split whose digits go to the ``heldout`` split only.
HELDOUT_FRACTION = 0.2
#: A distractor's side is at most this share of the target's (so the target is the largest digit).
MAX_DISTRACTOR_RATIO = 0.6


@functools.lru_cache(maxsize=1)
def _pools() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, list[np.ndarray]]]:
    """The 1797 digits as float strokes (N, 8, 8) in [0, 1], their labels, the source indices of
    each split and, per split, those of each class."""
    strokes, labels, digit_pools = _digit_pools()
    y = labels.numpy()
    train = digit_pools["train"].numpy()
    keep, held = stratified_split(y[train].tolist(), HELDOUT_FRACTION, DIGITS_SPLIT_SEED + 1)
    splits = {"train": train[keep], "heldout": train[held], "val": digit_pools["val"].numpy()}
    by_class = {s: [idx[y[idx] == c] for c in range(10)] for s, idx in splits.items()}
    return (strokes / 255.0).astype(np.float32), y, splits, by_class


def _render(src: np.ndarray, h: float, w: float, angle: float) -> np.ndarray:
    """``src`` (a (sh, sw) stroke in [0, 1]) drawn as an (h, w) pixel rectangle rotated by
    ``angle`` radians: a (P, P) alpha map, P the rotated rectangle's bounding square (bilinear
    sampling, zero outside the source)."""
    sh, sw = src.shape
    c, s = math.cos(angle), math.sin(angle)
    p = max(1, int(math.ceil(max(h * abs(c) + w * abs(s), h * abs(s) + w * abs(c)))))
    t = np.arange(p, dtype=np.float32) + 0.5 - p / 2
    yy, xx = t[:, None], t[None, :]
    u = (c * xx + s * yy) * (sw / w) + sw / 2 - 0.5 + 1  # source column (pixel centres), +1: padding
    v = (-s * xx + c * yy) * (sh / h) + sh / 2 - 0.5 + 1
    pad = np.zeros((sh + 2, sw + 2), dtype=np.float32)
    pad[1:-1, 1:-1] = src
    u, v = np.clip(u, 0, sw + 1), np.clip(v, 0, sh + 1)
    u0, v0 = np.minimum(u.astype(np.int64), sw), np.minimum(v.astype(np.int64), sh)
    fu, fv = u - u0, v - v0
    top = pad[v0, u0] * (1 - fu) + pad[v0, u0 + 1] * fu
    bottom = pad[v0 + 1, u0] * (1 - fu) + pad[v0 + 1, u0 + 1] * fu
    return top * (1 - fv) + bottom * fv


def _paste(image: np.ndarray, alpha: np.ndarray, cy: float, cx: float, color: np.ndarray) -> None:
    """Alpha-blend ``color`` through ``alpha`` centred at (cy, cx), clipped to the canvas."""
    _, h, w = image.shape
    p = alpha.shape[0]
    y0, x0 = int(round(cy - p / 2)), int(round(cx - p / 2))
    ya, xa, yb, xb = max(y0, 0), max(x0, 0), min(y0 + p, h), min(x0 + p, w)
    if ya >= yb or xa >= xb:
        return
    a = alpha[ya - y0:yb - y0, xa - x0:xb - x0][None]
    region = image[:, ya:yb, xa:xb]
    region *= 1 - a
    region += color[:, None, None] * a


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable gaussian blur of a (C, H, W) image, edges replicated."""
    r = int(math.ceil(3 * sigma))
    if sigma <= 0 or r == 0:
        return image
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    _, h, w = image.shape
    pad = np.pad(image, ((0, 0), (r, r), (0, 0)), mode="edge")
    out = sum(k[i] * pad[:, i:i + h] for i in range(2 * r + 1))
    pad = np.pad(out, ((0, 0), (0, 0), (r, r)), mode="edge")
    return sum(k[i] * pad[:, :, i:i + w] for i in range(2 * r + 1))


def _pair(value, name: str, lo: float, hi: float = math.inf, integer: bool = False) -> tuple:
    """``(min, max)`` checked to lie in [lo, hi] with min <= max; a ``ValueError`` naming ``name``."""
    try:
        a, b = value
        a, b = (int(a), int(b)) if integer else (float(a), float(b))
    except (TypeError, ValueError):
        raise ValueError(f"DigitClutter: {name} must be a (min, max) pair, got {value!r}") from None
    if not lo <= a <= b <= hi:
        raise ValueError(f"DigitClutter: {name} must be (min, max) with {lo} <= min <= max"
                         f"{'' if hi == math.inf else f' <= {hi}'}, got {value!r}")
    return a, b


class DigitClutter(Dataset):
    """The ``digit-clutter`` classification task (see the module's description), generated
    deterministically on the fly; ``(image, label)`` items like the ``digits`` dataset's.

    Each item is ``(x, y)``: ``x`` the uint8 RGB image (3, size, size) (after ``transform``,
    whatever it returns: the training and evaluation transforms take uint8), ``y`` the target
    digit's class, ``index % 10``.

    Args:
        split: ``"train"``, ``"heldout"`` or ``"val"`` (their source digits never mix).
        size: the canvas side in pixels (default 64; digit sizes are shares of it).
        num_images: how many images (default: 10000 train, 2000 heldout, 2000 val).
        seed: the draw seed; item ``i`` depends only on ``(seed, split, i)``.
        transform: applied to the uint8 image.
        digit_size: the target's side as a share of the canvas, ``(min, max)`` in (0, 1].
        distractors: ``(min, max)`` smaller whole digits per image.
        distractor_size: a distractor's side as a share of the target's, ``(min, max)`` with max
            <= 0.6 (the target stays the largest digit).
        fragments: ``(min, max)`` digit fragments per image.
        rotation: the largest rotation in degrees, of every digit and fragment (at most 45: a
            rotated 6 must not read as a 9).
        blur: the largest gaussian-blur sigma in pixels at 64 px (scaled with ``size``).
        noise: scale of the background clutter and the pixel noise (0: none).
        color: random digit colours (default); False: grey digits.
    """

    classes: list[str] = CLUTTER_CLASSES
    DEFAULT_NUM_IMAGES = {"train": 10000, "heldout": 2000, "val": 2000}

    def __init__(self, split: str = "train", size: int = 64, num_images: Optional[int] = None, seed: int = 0,
                 transform: Optional[Callable] = None, *, digit_size: tuple = (0.45, 0.8),
                 distractors: tuple = (0, 3), distractor_size: tuple = (0.3, 0.55),
                 fragments: tuple = (0, 4), rotation: float = 20.0, blur: float = 0.8, noise: float = 1.0,
                 color: bool = True) -> None:
        if split not in CLUTTER_SPLITS:
            raise ValueError(f"DigitClutter: split must be one of {CLUTTER_SPLITS}, got {split!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 32:
            raise ValueError(f"DigitClutter: size must be an int >= 32 (the models' smallest input), got {size!r}")
        n = self.DEFAULT_NUM_IMAGES[split] if num_images is None else num_images
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"DigitClutter: num_images must be an int >= 0, got {num_images!r}")
        self.digit_size = _pair(digit_size, "digit_size", 0.1, 1.0)
        self.distractors = _pair(distractors, "distractors", 0, integer=True)
        self.distractor_size = _pair(distractor_size, "distractor_size", 0.1, MAX_DISTRACTOR_RATIO)
        self.fragments = _pair(fragments, "fragments", 0, integer=True)
        if not 0 <= rotation <= 45:
            raise ValueError(f"DigitClutter: rotation must be in [0, 45] degrees (a 6 turned further reads "
                             f"as a 9), got {rotation!r}")
        if blur < 0 or noise < 0:
            raise ValueError(f"DigitClutter: blur and noise must be >= 0, got blur={blur!r}, noise={noise!r}")
        self.split, self.size, self.num_images, self.seed = split, size, n, int(seed)
        self.transform = transform
        self.rotation, self.blur, self.noise, self.color = float(rotation), float(blur), float(noise), bool(color)
        # digit-scenes draws the background and the digit colours
        self._scenes = DigitScenes("train", size=size, num_images=0, digit_size=(8, 8), color=color,
                                   noise=noise)

    @property
    def targets(self) -> list[int]:
        return [i % 10 for i in range(self.num_images)]

    def __len__(self) -> int:
        return self.num_images

    def __repr__(self) -> str:
        return (f"DigitClutter(split={self.split!r}, size={self.size}, num_images={self.num_images}, "
                f"seed={self.seed})")

    def __getitem__(self, index: int):
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"DigitClutter index {index} out of range for {self.num_images} images")
        index = index % self.num_images
        x = self.generate(index)
        if self.transform is not None:
            x = self.transform(x)
        return x, index % 10

    def source_digits(self, index: int) -> list[int]:
        """The indices (into scikit-learn's ``load_digits()``) of every digit drawn into item
        ``index`` (fragments, distractors, then the target last), for leakage checks."""
        return self._draw(index)[1]

    def generate(self, index: int) -> torch.Tensor:
        """Item ``index``'s image, uint8 (3, size, size), before ``transform``."""
        image = self._draw(index)[0]
        return torch.from_numpy((image * 255).round().astype(np.uint8))

    def _draw(self, index: int) -> tuple[np.ndarray, list[int]]:
        # torch.Generator draws (the same stream everywhere), numpy arithmetic (single-threaded)
        g = torch.Generator().manual_seed(_item_seed(self.seed, f"digit-clutter/{self.split}", index))
        strokes, _, splits, by_class = _pools()
        pool, size = splits[self.split], self.size
        max_angle = math.radians(self.rotation)
        image = self._scenes._background(g)
        sources = []

        side = size * _uniform(g, *self.digit_size)  # the target's, drawn first: the others are relative to it
        for _ in range(_randint(g, *self.fragments)):
            src = int(pool[_randint(g, 0, len(pool) - 1)])
            k = _randint(g, 3, 5)
            r0, c0 = _randint(g, 0, 8 - k), _randint(g, 0, 8 - k)
            cell = side / 8 * _uniform(g, 0.5, 1.0)
            alpha = _render(strokes[src, r0:r0 + k, c0:c0 + k], k * cell, k * cell,
                            _uniform(g, -max_angle, max_angle))
            _paste(image, alpha, _uniform(g, 0, size), _uniform(g, 0, size), self._scenes._digit_color(g))
            sources.append(src)
        for _ in range(_randint(g, *self.distractors)):
            src = int(pool[_randint(g, 0, len(pool) - 1)])
            d = side * _uniform(g, *self.distractor_size)
            alpha = _render(strokes[src], d, d * _uniform(g, 0.75, 1.0), _uniform(g, -max_angle, max_angle))
            _paste(image, alpha, _uniform(g, 0, size), _uniform(g, 0, size), self._scenes._digit_color(g))
            sources.append(src)
        label_pool = by_class[self.split][index % 10]
        src = int(label_pool[_randint(g, 0, len(label_pool) - 1)])
        alpha = _render(strokes[src], side, side * _uniform(g, 0.75, 1.0), _uniform(g, -max_angle, max_angle))
        half = alpha.shape[0] / 2
        lo, hi = min(half, size / 2), max(size - half, size / 2)  # whole inside the canvas where it fits
        _paste(image, alpha, _uniform(g, lo, hi), _uniform(g, lo, hi), self._scenes._digit_color(g))
        sources.append(src)

        image = _gaussian_blur(image, _uniform(g, 0, self.blur) * size / 64)
        if self.noise > 0:
            sigma = _uniform(g, 0.0, 0.04) * self.noise
            image = image + (torch.randn(image.shape, generator=g) * sigma).numpy()
        return np.clip(image, 0, 1), sources
