"""``digit-scenes``: detection scenes generated from scikit-learn's digits, no download.

Each image is a canvas (default 320x320) holding 1-6 digits pasted at random sizes (24-128 px
side) and positions, over a dark, uneven background with faint clutter strokes and blobs and a
little gaussian grain. Every digit has an exact box, a label and a per-pixel instance mask.

Determinism: item ``i`` is drawn from its own ``torch.Generator`` seeded from
``(seed, split, i)``, so it is the same on every call, in every worker and every process,
whatever else was drawn before. Generation is cheap (a few ms), so nothing is cached on disk;
:func:`mobilenets.data.write_coco` / :func:`~mobilenets.data.write_yolo` write the
scenes out for other tools.

No leakage: train scenes paste only digits of the classification training split and val scenes
only digits of its held-out split (:func:`mobilenets.data.stratified_split` with the same
fraction and seed the digits classifier uses), so a backbone trained on the digits classifier
has never seen a val scene's digits.
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .common import DIGITS_SPLIT_SEED, DIGITS_VAL_FRACTION, load_digits_tensors, stratified_split

__all__ = ["DigitScenes", "semantic_mask", "DIGIT_CLASSES"]

#: torchvision's convention: index 0 is the background, digit ``d`` has label ``d + 1``.
DIGIT_CLASSES: list[str] = ["__background__"] + [str(d) for d in range(10)]
#: A digit pixel belongs to the digit's mask when its stroke intensity (0..1) exceeds this
#: (compared exactly: see :func:`_resize_exact`).
MASK_THRESHOLD = 0.25
#: Pairwise limit on the overlap of two digits' boxes: intersection / area of the smaller box
#: (so also IoU) stays below this, and no small digit hides inside a large one's box.
MAX_OVERLAP = 0.3
_PLACEMENT_TRIES = 30


@functools.lru_cache(maxsize=1)
def _digit_pools() -> tuple[np.ndarray, torch.Tensor, dict[str, torch.Tensor]]:
    """The 1797 digits as uint8 strokes (N, 8, 8) (0..255), their labels and the indices of
    the classification train / val split."""
    x, y = load_digits_tensors(8)  # the native 8x8 grid (uint8 RGB, grey)
    strokes = x[:, 0].numpy().astype(np.int64)
    train, val = stratified_split(y.tolist(), DIGITS_VAL_FRACTION, DIGITS_SPLIT_SEED)
    return strokes, y, {"train": torch.tensor(train), "val": torch.tensor(val)}


@functools.lru_cache(maxsize=512)
def _linear_weights(n: int, src: int = 8) -> np.ndarray:
    """(n, src) integer weights, in units of 1 / (2 n), of bilinear upsampling ``src`` -> ``n``
    pixels with pixel centres aligned (``align_corners=False``, as torch), computed exactly."""
    w = np.zeros((n, src), dtype=np.int64)
    for d in range(n):
        s2n = max((2 * d + 1) * src - n, 0)  # the source coordinate times 2n, clamped at 0
        i0, frac = divmod(s2n, 2 * n)
        i1 = min(i0 + 1, src - 1)
        w[d, i0] += 2 * n - frac
        w[d, i1] += frac
    return w


def _resize_exact(stroke: np.ndarray, h: int, w: int) -> tuple[np.ndarray, int]:
    """A uint8-valued (8, 8) stroke bilinearly resized to (h, w) in exact integer arithmetic:
    ``(values, denominator)`` with the intensity in [0, 1] = values / denominator. The masks are
    thresholded on these integers, so they are identical on every machine and CPU."""
    values = _linear_weights(h) @ stroke @ _linear_weights(w).T
    return values, 255 * (2 * h) * (2 * w)


def _item_seed(seed: int, split: str, index: int) -> int:
    """A 63-bit seed from (seed, split, index), the same on every machine and Python run."""
    key = f"mobilenets.digit-scenes/{int(seed)}/{split}/{int(index)}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") & (2 ** 63 - 1)


def semantic_mask(target: dict) -> torch.Tensor:
    """The per-pixel class map of a target: (H, W) int64, ``label`` on each instance's pixels,
    0 on the background. Where instances overlap the later one (the top-most pasted digit in
    :class:`DigitScenes`) wins.

    Args:
        target: a target dict with ``masks`` (N, H, W) and ``labels`` (N,).
    """
    masks, labels = target["masks"], target["labels"]
    if masks.ndim != 3 or masks.shape[0] != labels.shape[0]:
        raise ValueError(f"semantic_mask: expected masks (N, H, W) and labels (N,), got "
                         f"{tuple(masks.shape)} and {tuple(labels.shape)}")
    # numpy, single-threaded: torch's intra-op threads only slow these small ops down
    m = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    out = np.zeros(m.shape[1:], dtype=np.int64)
    for mk, lab in zip(m, torch.as_tensor(labels).tolist()):
        out[mk != 0] = int(lab)
    return torch.from_numpy(out)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """An int in [lo, hi] (both included)."""
    return int(torch.randint(lo, hi + 1, (), generator=g))


class DigitScenes(Dataset):
    """Detection scenes from scikit-learn's digits, generated deterministically on the fly.

    Each item is ``(image, target)``: ``image`` float32 (3, H, W) in [0, 1]; ``target`` a dict
    as torchvision's detection models take it: ``boxes`` float32 (N, 4) xyxy in absolute pixels
    (pixel edges: a digit covering columns 10..19 has x1 = 10, x2 = 20), tight around the digit's
    mask; ``labels`` int64 (N,), digit ``d`` -> ``d + 1`` (0 is the background, so
    ``num_classes=11``); ``masks`` uint8 (N, H, W), the pixels of each digit's stroke (whole
    strokes: a later digit may cover part of an earlier one, see :func:`semantic_mask`);
    ``image_id`` int (the index). Instances are in pasting order (bottom to top).

    Args:
        split: ``"train"`` (digits of the classification training split) or ``"val"`` (held-out
            digits only).
        size: canvas size, an int (square) or ``(H, W)``; at least the smallest digit size.
        num_images: how many images (default: 2000 for train, 500 for val).
        seed: the scene seed; item ``i`` depends only on ``(seed, split, i)``.
        transforms: a callable on ``(image, target)`` applied after generation, e.g.
            :func:`mobilenets.data.detection_transforms`.
        digits_per_image: ``(min, max)`` digits drawn per image (default 1-6); a digit that
            finds no free place after 30 tries is left out, so an image may hold fewer.
        digit_size: ``(min, max)`` side in pixels of a pasted digit's square (default 24-128,
            capped at the canvas).
        color: random digit colours (default); False: grey digits of random brightness.
        noise: scale of the background clutter and noise (0 for clean scenes; default 1).
    """

    classes: list[str] = DIGIT_CLASSES
    #: ~per-channel mean of the images (a fill value for zoom-out augmentation).
    mean: tuple[float, float, float] = (0.2, 0.2, 0.2)
    DEFAULT_NUM_IMAGES = {"train": 2000, "val": 500}

    def __init__(self, split: str = "train", size: Union[int, Sequence[int]] = 320,
                 num_images: Optional[int] = None, seed: int = 0,
                 transforms: Optional[Callable] = None, *,
                 digits_per_image: tuple[int, int] = (1, 6),
                 digit_size: tuple[int, int] = (24, 128), color: bool = True,
                 noise: float = 1.0) -> None:
        if split not in self.DEFAULT_NUM_IMAGES:
            raise ValueError(f"DigitScenes: split must be 'train' or 'val', got {split!r}")
        if isinstance(size, int):
            h, w = size, size
        else:
            if len(size) != 2:
                raise ValueError(f"DigitScenes: size must be an int or (H, W), got {size!r}")
            h, w = int(size[0]), int(size[1])
        lo, hi = int(digit_size[0]), int(digit_size[1])
        if not 8 <= lo <= hi:
            raise ValueError(f"DigitScenes: digit_size must be (min, max) with 8 <= min <= max, "
                             f"got {digit_size!r}")
        if min(h, w) < lo:
            raise ValueError(f"DigitScenes: size {h}x{w} is smaller than the smallest digit "
                             f"({lo} px); use size >= {lo} or a smaller digit_size")
        dmin, dmax = int(digits_per_image[0]), int(digits_per_image[1])
        if not 1 <= dmin <= dmax:
            raise ValueError(f"DigitScenes: digits_per_image must be (min, max) with 1 <= min <= max, "
                             f"got {digits_per_image!r}")
        n = self.DEFAULT_NUM_IMAGES[split] if num_images is None else int(num_images)
        if n < 0:
            raise ValueError(f"DigitScenes: num_images must be >= 0, got {num_images}")
        if noise < 0:
            raise ValueError(f"DigitScenes: noise must be >= 0, got {noise}")
        self.split, self.size, self.num_images, self.seed = split, (h, w), n, int(seed)
        self.transforms = transforms
        self.digits_per_image = (dmin, dmax)
        self.digit_size = (lo, min(hi, h, w))
        self.color, self.noise = bool(color), float(noise)

    def __len__(self) -> int:
        return self.num_images

    def __repr__(self) -> str:
        h, w = self.size
        return (f"DigitScenes(split={self.split!r}, size=({h}, {w}), num_images={self.num_images}, "
                f"seed={self.seed})")

    semantic_mask = staticmethod(semantic_mask)

    def __getitem__(self, index: int):
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"DigitScenes index {index} out of range for {self.num_images} images")
        index = index % self.num_images
        image, target = self.generate(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def source_digits(self, index: int) -> list[int]:
        """The indices (into scikit-learn's ``load_digits()``) of the digits pasted in item
        ``index``, in pasting order (for leakage checks)."""
        return self._draw(index)[2]

    # --- generation --------------------------------------------------------------------------
    def generate(self, index: int) -> tuple[torch.Tensor, dict]:
        """Item ``index`` before ``transforms``."""
        image, instances, _ = self._draw(index)
        h, w = self.size
        n = len(instances)
        masks = np.zeros((n, h, w), dtype=np.uint8)  # numpy: see _draw
        for k, (_, (y0, x0), local_mask, _) in enumerate(instances):
            mh, mw = local_mask.shape
            masks[k, y0:y0 + mh, x0:x0 + mw] = local_mask
        boxes = torch.tensor([box for *_, box in instances], dtype=torch.float32).reshape(n, 4)
        labels = torch.tensor([label for label, *_ in instances], dtype=torch.int64)
        return image, {"boxes": boxes, "labels": labels, "masks": torch.from_numpy(masks), "image_id": int(index)}

    def _draw(self, index: int):
        # Random draws come from a torch.Generator (the same stream on every machine); the pixel
        # arithmetic runs in numpy, single-threaded: these small ops gain nothing from torch's
        # intra-op threads and lose 10x when another process holds the other cores.
        g = torch.Generator().manual_seed(_item_seed(self.seed, self.split, index))
        strokes, digit_labels, pools = _digit_pools()
        pool = pools[self.split]
        h, w = self.size
        image = self._background(g)
        instances, sources, placed = [], [], []
        lo, hi = self.digit_size
        for _ in range(_randint(g, *self.digits_per_image)):
            src = int(pool[_randint(g, 0, len(pool) - 1)])
            for _try in range(_PLACEMENT_TRIES):
                side = int(round(math.exp(_uniform(g, math.log(lo), math.log(hi)))))
                other = max(lo, int(round(side * _uniform(g, 0.75, 1.0))))
                ph, pw = (side, other) if float(torch.rand((), generator=g)) < 0.5 else (other, side)
                y0, x0 = _randint(g, 0, h - ph), _randint(g, 0, w - pw)
                scaled, denom = _resize_exact(strokes[src], ph, pw)
                mask = scaled > denom * MASK_THRESHOLD  # exact: both sides are integers below 2**53
                rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
                box = (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1)
                if all(_overlap(box, b) < MAX_OVERLAP for b in placed):
                    break
            else:
                continue  # no free place: this digit is left out
            color = self._digit_color(g)
            a = (scaled / denom).astype(np.float32)[None]
            region = image[:, y0:y0 + ph, x0:x0 + pw]
            region *= 1 - a
            region += color[:, None, None] * a
            # the tight box of the mask, relative to the paste origin
            bx0, by0 = box[0] - x0, box[1] - y0
            local = mask[by0:box[3] - y0, bx0:box[2] - x0].astype(np.uint8)
            instances.append((int(digit_labels[src]) + 1, (box[1], box[0]), local, box))
            sources.append(src)
            placed.append(box)
        if self.noise > 0:  # colourless grain in 2x2 cells (finer grain makes PNGs 3x larger)
            sigma = _uniform(g, 0.004, 0.015) * self.noise
            grain = (torch.randn((h + 1) // 2, (w + 1) // 2, generator=g) * sigma).numpy()
            image += grain.repeat(2, 0).repeat(2, 1)[None, :h, :w]
        np.clip(image, 0, 1, out=image)
        return torch.from_numpy(image), instances, sources

    def _digit_color(self, g: torch.Generator) -> np.ndarray:
        brightness = _uniform(g, 0.65, 1.0)
        if not self.color:
            return np.full((3,), brightness, dtype=np.float32)
        c = (0.35 + 0.65 * torch.rand(3, generator=g)).numpy()
        return (c / c.max() * brightness).astype(np.float32)

    def _background(self, g: torch.Generator) -> np.ndarray:
        """A dark, uneven canvas (3, H, W) float32 with faint clutter: a base colour, a smooth
        gradient, a few faint strokes and blobs (all well below the digits' brightness)."""
        h, w = self.size
        base = (0.06 + 0.2 * torch.rand(3, generator=g)).numpy()
        amp = 0.06 * self.noise
        field = ((torch.rand(3, 3, 3, generator=g) - 0.5) * 2 * amp).numpy()  # (C, 3, 3) control points
        wy, wx = _hat_weights(h), _hat_weights(w)  # bilinear through 3x3 points, corners aligned
        rows = np.einsum("cij,yi->cyj", field, wy)  # (C, H, 3)
        # base + rows_0 wx_0 + rows_1 wx_1 + rows_2 wx_2, added in this order in float64. wx_2 is
        # 0 on the columns up to the centre and wx_0 on those after it: adding a zero product
        # changes no value, so each side adds its two terms only (the same floats, 4x faster)
        k = int(np.count_nonzero(wx[:, 2] == 0))  # the columns up to the centre
        image = np.empty((3, h, w))
        for cols, (a, b) in ((slice(0, k), (0, 1)), (slice(k, w), (1, 2))):
            np.add(base[:, None, None], rows[:, :, None, a] * wx[None, None, cols, a], out=image[:, :, cols])
            image[:, :, cols] += rows[:, :, None, b] * wx[None, None, cols, b]
        image = image.astype(np.float32)
        if self.noise <= 0:
            return np.clip(image, 0, 1, out=image)
        for _ in range(_randint(g, 0, 6)):  # faint strokes: short line segments, 1-3 px wide
            self._stroke(image, g)
        for _ in range(_randint(g, 0, 4)):  # faint blobs: gaussian ellipses
            self._blob(image, g)
        return image

    def _stroke(self, image: np.ndarray, g: torch.Generator) -> None:
        h, w = self.size
        x1, y1 = _uniform(g, 0, w), _uniform(g, 0, h)
        length, angle = _uniform(g, 10, 0.4 * max(h, w)), _uniform(g, 0, math.pi)
        x2, y2 = x1 + length * math.cos(angle), y1 + length * math.sin(angle)
        width = _uniform(g, 0.7, 1.5)
        strength = _uniform(g, 0.05, 0.15) * self.noise
        c = (torch.rand(3, generator=g) * strength).numpy()
        xa, xb = max(0, int(min(x1, x2) - 3)), min(w, int(max(x1, x2) + 4))
        ya, yb = max(0, int(min(y1, y2) - 3)), min(h, int(max(y1, y2) + 4))
        if xa >= xb or ya >= yb:
            return
        ys = np.arange(ya, yb, dtype=np.float32)[:, None] + 0.5
        xs = np.arange(xa, xb, dtype=np.float32)[None, :] + 0.5
        dx, dy = x2 - x1, y2 - y1
        t = np.clip(((xs - x1) * dx + (ys - y1) * dy) / (dx * dx + dy * dy), 0, 1)
        d2 = (xs - x1 - t * dx) ** 2 + (ys - y1 - t * dy) ** 2
        image[:, ya:yb, xa:xb] += c[:, None, None] * np.exp(-d2 / (2 * width ** 2))

    def _blob(self, image: np.ndarray, g: torch.Generator) -> None:
        h, w = self.size
        cx, cy = _uniform(g, 0, w), _uniform(g, 0, h)
        sx, sy = _uniform(g, 4, 30), _uniform(g, 4, 30)
        c = (torch.rand(3, generator=g) * _uniform(g, 0.04, 0.12) * self.noise).numpy()
        xa, xb = max(0, int(cx - 3 * sx)), min(w, int(cx + 3 * sx) + 1)
        ya, yb = max(0, int(cy - 3 * sy)), min(h, int(cy + 3 * sy) + 1)
        if xa >= xb or ya >= yb:
            return
        ys = np.arange(ya, yb, dtype=np.float32)[:, None] + 0.5
        xs = np.arange(xa, xb, dtype=np.float32)[None, :] + 0.5
        e = np.exp(-((xs - cx) / sx) ** 2 / 2 - ((ys - cy) / sy) ** 2 / 2)
        image[:, ya:yb, xa:xb] += c[:, None, None] * e


def _hat_weights(n: int) -> np.ndarray:
    """(n, 3) linear-interpolation weights of 3 control points spread over n pixels, the first
    and last on the end pixels (``align_corners=True``)."""
    pos = np.linspace(0.0, 2.0, n) if n > 1 else np.zeros(1)
    return np.clip(1 - np.abs(pos[:, None] - np.arange(3)[None, :]), 0, None)


def _overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over the smaller box's area (>= IoU)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller
