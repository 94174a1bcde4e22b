"""Training recipes: a typed :class:`Recipe`, optimizers, LR schedules, EMA, checkpoint averaging.

Named recipes mirror the published ones (torchvision's references/classification for MobileNetV3; the TF Model Garden MobileNetV4 configs; Chen et al. 2022 for Mobile-Former):

* ``torchvision_mnv3``: RMSprop (alpha 0.9, TF-style eps 1e-3 -> PyTorch eps sqrt(1e-3) = 0.0316),
  lr 0.064 (batch 1024 on 8 GPUs x 128), step decay 0.973 every 2 epochs, 600 epochs,
  AutoAugment, RandomErasing 0.2, weight decay 1e-5, average of the last 3 checkpoints,
  label smoothing / stochastic depth / LR noise (the later "+1.5 points" additions).
* ``tf_mnv4``: TF Model Garden MobileNetV4: AdamW, cosine with warm-up, EMA 0.9999,
  RandAugment, label smoothing 0.1, stochastic depth (mixup/cutmix for the large models).
* ``mobileformer``: AdamW, cosine, 450 epochs, RandAugment m9, random erasing 0.2.
* ``digits`` (the default): a small, fast recipe for scikit-learn's 8x8 digits upscaled, tuned
  to reach >= 97 % validation top-1 in a few minutes on 2 CPU cores. Its epochs are 22 steps:
  every BatchNorm trains with momentum 0.1 (``bn_momentum``). MobileNetV3's own 0.01 (torchvision's,
  for ImageNet epochs of ~1,250 steps) averages the running statistics over ~100 steps, 4.5 of
  these epochs, while AdamW moves the weights: the eval-mode network then sees statistics of
  older weights, and MobileNetV3-Large validated at chance (9.75 %) in every epoch of a run whose
  weights reach 99.2 % with the statistics re-estimated.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..data import (DIGITS_CROP_PCT, DIGITS_MEAN, DIGITS_SPLIT_SEED, DIGITS_STD, DIGITS_VAL_FRACTION,
                    IMAGENET_CROP_PCT, IMAGENET_MEAN, IMAGENET_STD)


OPTIMIZERS = ("sgd", "adamw", "rmsprop")
SCHEDULES = ("cosine", "step", "poly", "constant")
AUTO_AUGMENTS = ("none", "autoaugment", "randaugment", "trivialaugment")
DATASETS = ("digits", "imagefolder", "fake", "digit-scenes", "folder")


@dataclass
class Recipe:
    """Everything that defines a training run. Every field can be overridden from the command
    line (``--set lr=0.01`` or ``--lr 0.01``)."""

    # model and data
    task: str = "classify"                    # classify | detect | segment
    model: str = "mobilenetv4_conv_small"
    model_kwargs: dict = field(default_factory=dict)  # more create_model options (JSON on the command line)
    pretrained: Optional[str] = None          # checkpoint to start from (classifier may differ)
    dataset: str = "digits"                   # digits | imagefolder | fake
    data_dir: Optional[str] = None            # imagefolder root (class sub-folders, or train/ + val/)
    val_fraction: float = 0.2                 # held-out share when the data has no val/ split
    img_size: int = 64                        # train/eval resolution
    crop_size: Optional[int] = None           # segmentation: training crop side (default img_size, the eval size)
    seg_scale: tuple = (0.5, 2.0)             # segmentation: random resize of the shorter side, x img_size (torchvision's)
    crop_pct: float = IMAGENET_CROP_PCT       # eval: resize to img_size / crop_pct, center crop
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    fake_samples: int = 512                   # size of the 'fake' dataset
    fake_classes: int = 10
    scene_images: int = 2000                  # digit-scenes: training canvases (generated)
    scene_val_images: int = 500               # digit-scenes: validation canvases
    # augmentation
    scale_min: float = 0.08                   # RandomResizedCrop scale lower bound
    ratio: tuple = (3 / 4, 4 / 3)
    hflip: float = 0.5
    auto_augment: str = "none"                # none | autoaugment | randaugment | trivialaugment
    ra_magnitude: int = 9
    ra_num_ops: int = 2
    reprob: float = 0.0                       # RandomErasing probability
    mixup: float = 0.0                        # MixUp alpha (0: off)
    cutmix: float = 0.0                       # CutMix alpha (0: off)
    # optimisation
    epochs: int = 30
    batch_size: int = 64                      # per process
    opt: str = "adamw"                        # sgd | adamw | rmsprop
    lr: float = 1e-3                          # for the global batch (batch_size x world size)
    momentum: float = 0.9
    weight_decay: float = 0.05
    opt_eps: float = 1e-8                     # PyTorch convention (added outside the sqrt)
    tf_eps: Optional[float] = None            # TF-convention eps (inside the sqrt): overrides opt_eps
    rmsprop_alpha: float = 0.9
    sched: str = "cosine"                     # cosine | step | poly | constant
    poly_power: float = 0.9                   # poly schedule: lr * (1 - t)^power (torchvision's segmentation)
    warmup_epochs: float = 0.0
    warmup_lr_factor: float = 0.01            # warm-up starts at lr x this
    min_lr_factor: float = 0.0                # cosine floor, as a fraction of lr
    decay_epochs: float = 2.0                 # step schedule: multiply by decay_rate every ...
    decay_rate: float = 0.973
    lr_noise: float = 0.0                     # std of multiplicative LR noise (0: off)
    lr_noise_range: tuple = (0.5, 1.0)        # fraction of training where noise is applied
    label_smoothing: float = 0.1
    aux_loss_weight: float = 0.5              # segmentation: weight of the aux head's loss (torchvision's)
    drop_rate: Optional[float] = None         # classifier dropout (None: the model's default)
    drop_path_rate: float = 0.0               # stochastic depth
    bn_momentum: Optional[float] = None       # every BatchNorm's running-statistics momentum while training
    #                                           (None: the model's, e.g. MobileNetV3's 0.01, made for long epochs)
    ema_decay: float = 0.0                    # EMA of weights (0: off)
    ema_warmup: bool = True                   # decay = min(ema_decay, (1 + t) / (10 + t))
    avg_last_k: int = 0                       # average the weights of the last k epochs
    clip_grad: float = 0.0                    # max grad norm (0: off)
    amp: bool = True                          # mixed precision (only used on a GPU)
    channels_last: bool = False
    # distillation
    teacher: Optional[str] = None             # registry name or checkpoint
    teacher_weights: Optional[str] = None     # weights for a teacher given by name
    distill_alpha: float = 0.5                # weight of the KL term
    distill_temp: float = 4.0
    # run
    seed: int = 0
    workers: int = 0
    device: str = "auto"                      # auto | cpu | cuda
    eval_every: int = 1
    ckpt_every_steps: int = 0                 # also write last.pt every N steps (0: at epoch ends only)
    dist_timeout_s: float = 300.0             # DDP: a collective waiting longer for a hung rank fails

    def validate(self) -> "Recipe":
        """Raise ``ValueError`` naming the field for an impossible setting."""
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(msg)
        need(self.opt in OPTIMIZERS, f"opt must be one of {OPTIMIZERS}, got {self.opt!r}")
        need(self.sched in SCHEDULES, f"sched must be one of {SCHEDULES}, got {self.sched!r}")
        need(self.auto_augment in AUTO_AUGMENTS,
             f"auto_augment must be one of {AUTO_AUGMENTS}, got {self.auto_augment!r}")
        from .task import get_task, task_names
        need(self.task in task_names(), f"task must be one of {tuple(task_names())}, got {self.task!r}")
        datasets = get_task(self.task).datasets
        need(self.dataset in datasets,
             f"dataset must be one of {datasets} for task {self.task!r}, got {self.dataset!r}")
        need(self.dataset not in ("imagefolder", "folder") or bool(self.data_dir),
             f"dataset {self.dataset!r} needs data_dir (--data PATH)")
        need(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive number, got {self.lr}")
        need(self.img_size >= 32, f"img_size must be >= 32 (the models' minimum input), got {self.img_size}")
        need(0 < self.val_fraction < 1, f"val_fraction must be in (0, 1), got {self.val_fraction}")
        need(0 < self.scale_min <= 1, f"scale_min must be in (0, 1], got {self.scale_min}")
        need(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        need(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        need(0 <= self.distill_alpha <= 1, f"distill_alpha must be in [0, 1], got {self.distill_alpha}")
        need(self.distill_temp > 0, f"distill_temp must be > 0, got {self.distill_temp}")
        need(self.avg_last_k >= 0, f"avg_last_k must be >= 0, got {self.avg_last_k}")
        need(self.dist_timeout_s > 0, f"dist_timeout_s must be > 0, got {self.dist_timeout_s}")
        need(self.ckpt_every_steps >= 0, f"ckpt_every_steps must be >= 0 (0: off), got {self.ckpt_every_steps}")
        need(0 <= self.reprob <= 1 and 0 <= self.hflip <= 1, "reprob and hflip are probabilities in [0, 1]")
        need(self.mixup >= 0 and self.cutmix >= 0, "mixup and cutmix alphas must be >= 0")
        need(self.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {self.device!r}")
        need(self.tf_eps is None or self.tf_eps > 0, f"tf_eps must be > 0, got {self.tf_eps}")
        need(self.crop_size is None or self.crop_size >= 32,
             f"crop_size must be >= 32 (the models' minimum input), got {self.crop_size}")
        need(len(self.seg_scale) == 2 and 0 < self.seg_scale[0] <= self.seg_scale[1],
             f"seg_scale must be (min, max) with 0 < min <= max, got {self.seg_scale}")
        need(self.poly_power > 0, f"poly_power must be > 0, got {self.poly_power}")
        need(self.aux_loss_weight >= 0, f"aux_loss_weight must be >= 0, got {self.aux_loss_weight}")
        need(self.bn_momentum is None or 0 < self.bn_momentum <= 1,
             f"bn_momentum must be in (0, 1] (or None: the model's), got {self.bn_momentum}")
        return self

    def to_dict(self) -> dict:
        """Plain types only (lists for tuples), so it can live in a ``weights_only`` checkpoint."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Recipe":
        names = {f.name: f for f in fields(cls)}
        kw = {}
        for k, v in d.items():
            if k in names:
                kw[k] = tuple(v) if isinstance(v, list) else v
        return cls(**kw)

    def replace(self, **overrides) -> "Recipe":
        return dataclasses.replace(self, **overrides)


# --- named recipes -------------------------------------------------------------------------------
RECIPES: dict[str, Recipe] = {
    # Tuned on 2 CPU cores: 1437 training images (80 %, stratified), 64 px (epoch time:
    # benchmarks/RESULTS.md).
    # No flips (a mirrored digit is another glyph); mild crops; short warm-up then cosine.
    "digits": Recipe(img_size=64, epochs=20, batch_size=64, opt="adamw", lr=4e-3, weight_decay=0.05,
                     sched="cosine", warmup_epochs=1, scale_min=0.6, ratio=(0.85, 1.18), hflip=0.0,
                     label_smoothing=0.1, crop_pct=DIGITS_CROP_PCT, mean=DIGITS_MEAN, std=DIGITS_STD,
                     val_fraction=DIGITS_VAL_FRACTION, seed=DIGITS_SPLIT_SEED, bn_momentum=0.1),
    # torchvision's MobileNetV3-Large recipe (torchvision's references/classification and its MobileNetV3 training write-up).
    "torchvision_mnv3": Recipe(
        model="mobilenetv3_large_100", dataset="imagefolder", img_size=224, epochs=600, batch_size=128,
        opt="rmsprop", lr=0.064, momentum=0.9, rmsprop_alpha=0.9, tf_eps=1e-3, weight_decay=1e-5,
        sched="step", decay_epochs=2, decay_rate=0.973, warmup_epochs=0, auto_augment="autoaugment",
        reprob=0.2, avg_last_k=3, label_smoothing=0.1, drop_path_rate=0.0, lr_noise=0.0,
        scale_min=0.08, hflip=0.5),
    # TF Model Garden MobileNetV4 (conv small settings; large models add mixup/cutmix).
    "tf_mnv4": Recipe(
        model="mobilenetv4_conv_small", dataset="imagefolder", img_size=224, epochs=2400,
        batch_size=512, opt="adamw", lr=0.002, weight_decay=0.01, sched="cosine", warmup_epochs=5,
        ema_decay=0.9999, auto_augment="randaugment", ra_magnitude=9, ra_num_ops=2,
        label_smoothing=0.1, drop_path_rate=0.0, drop_rate=0.3),
    "tf_mnv4_large": Recipe(
        model="mobilenetv4_conv_large", dataset="imagefolder", img_size=384, epochs=500,
        batch_size=256, opt="adamw", lr=0.004, weight_decay=0.2, sched="cosine", warmup_epochs=20,
        ema_decay=0.9999, auto_augment="randaugment", ra_magnitude=15, mixup=0.8, cutmix=1.0,
        label_smoothing=0.1, drop_path_rate=0.35, drop_rate=0.2),
    # Mobile-Former (Chen et al. 2022): AdamW, cosine, 450 epochs, RandAugment m9, RE 0.2.
    "mobileformer": Recipe(
        model="mobileformer_294m", dataset="imagefolder", img_size=224, epochs=450, batch_size=128,
        opt="adamw", lr=8e-4, weight_decay=0.08, sched="cosine", warmup_epochs=20,
        auto_augment="randaugment", ra_magnitude=9, reprob=0.2, label_smoothing=0.1),
    # --- detection (--task detect) ---
    # The digit-scenes goal: SSDLite on MobileNetV4-Conv-S, backbone from the digits classifier
    # (--set pretrained=runs/<digits run>/best.pt), on 2 CPU cores (benchmarks/DETECTION.md).
    # Digits are 24-128 px: default boxes from 32 to 160 px (torchvision's 64-304 px miss the
    # small ones: a 24 px digit has IoU 0.14 with a 64 px box). channels_last: 25 % faster training
    # steps on 2 CPU threads (SSDLite-MNv4-Conv-S, batch 8, measured interleaved).
    "digit_scenes": Recipe(
        task="detect", model="ssdlite320_mobilenetv4_conv_small", model_kwargs={"anchor_ratios": [0.1, 0.5]},
        dataset="digit-scenes", img_size=320, channels_last=True,
        epochs=7, batch_size=16, opt="sgd", lr=0.05, momentum=0.9, weight_decay=4e-5, sched="cosine",
        warmup_epochs=0.5, hflip=0.0, label_smoothing=0.0, scene_images=2000, scene_val_images=500),
    # torchvision's SSDLite320-MobileNetV3 COCO recipe (references/detection: 660 epochs, cosine,
    # lr 0.15 for 8 GPUs x 24 images, weight decay 4e-5), its lr scaled to one process of 24.
    "ssdlite": Recipe(
        task="detect", model="ssdlite320_mobilenetv3_large_100", dataset="folder", img_size=320, epochs=660,
        batch_size=24, opt="sgd", lr=0.15 * 24 / 192, momentum=0.9, weight_decay=4e-5, sched="cosine",
        warmup_epochs=0, hflip=0.0, label_smoothing=0.0),
    # torchvision's Faster R-CNN MobileNetV3-FPN COCO recipe (26 epochs, lr 0.02 for 8 GPUs x 2
    # images, weight decay 1e-4; its steps at 16 and 22 become a cosine), lr scaled to one process of 2.
    "fasterrcnn": Recipe(
        task="detect", model="fasterrcnn_mobilenetv3_large_100_fpn", dataset="folder", img_size=800, epochs=26,
        batch_size=2, opt="sgd", lr=0.02 * 2 / 16, momentum=0.9, weight_decay=1e-4, sched="cosine",
        warmup_epochs=0.1, hflip=0.0, label_smoothing=0.0),
    # --- segmentation (--task segment) ---
    # The digit-scenes goal: LR-ASPP on MobileNetV4-Conv-S, backbone from the digits classifier
    # (--set pretrained=runs/<digits run>/best.pt), on 2 CPU cores (benchmarks/SEGMENTATION.md).
    # The digits recipe's normalization (the backbone was trained with it). 192 px training crops
    # of the 320 px scenes (evaluated whole) with a mild 0.75-1.25 scale jitter: twice the images
    # per second of 320 crops, 11 epochs in about 20 minutes, +0.05 mIoU at equal time.
    "digit_scenes_seg": Recipe(
        task="segment", model="lraspp_mobilenetv4_conv_small", dataset="digit-scenes", img_size=320,
        crop_size=192, seg_scale=(0.75, 1.25),
        epochs=11, batch_size=16, opt="sgd", lr=0.05, momentum=0.9, weight_decay=1e-5, sched="poly",
        warmup_epochs=0.25, hflip=0.0, label_smoothing=0.0, mean=DIGITS_MEAN, std=DIGITS_STD,
        scene_images=2000, scene_val_images=500),
    # torchvision's MobileNetV3 segmentation recipes (references/segmentation: 30 epochs, SGD
    # momentum 0.9, lr 0.01 for 8 GPUs x 4 images, weight decay 1e-6, poly 0.9; DeepLabV3 with
    # the aux loss at 0.5), lr scaled to one process of 4; crops of img_size (torchvision: 480
    # crops, evaluation at 520).
    "lraspp": Recipe(
        task="segment", model="lraspp_mobilenetv3_large_100", dataset="folder", img_size=520, crop_size=480,
        epochs=30,
        batch_size=4, opt="sgd", lr=0.01 * 4 / 32, momentum=0.9, weight_decay=1e-6, sched="poly",
        warmup_epochs=0, hflip=0.0, label_smoothing=0.0),
    "deeplabv3": Recipe(
        task="segment", model="deeplabv3_mobilenetv3_large_100", model_kwargs={"aux_loss": True},
        dataset="folder", img_size=520, crop_size=480, epochs=30, batch_size=4, opt="sgd", lr=0.01 * 4 / 32,
        momentum=0.9,
        weight_decay=1e-6, sched="poly", warmup_epochs=0, hflip=0.0, label_smoothing=0.0, aux_loss_weight=0.5),
}


class UnknownRecipeError(KeyError, ValueError):
    """Unknown recipe name. A ``KeyError`` (lookup) and a ``ValueError`` (bad argument)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def get_recipe(name: str) -> Recipe:
    """A copy of a named recipe (:class:`UnknownRecipeError`, a ``KeyError``, listing the names
    for an unknown one)."""
    if name not in RECIPES:
        raise UnknownRecipeError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}")
    return copy.deepcopy(RECIPES[name])


def _parse_value(text: str, default: Any, name: str) -> Any:
    """Parse a command-line string into the type of the field's default."""
    t = text.strip()
    low = t.lower()
    if low in ("none", "null") and name in _OPTIONAL_FIELDS:
        return None
    if isinstance(default, dict):
        import json
        try:
            value = json.loads(t)
        except json.JSONDecodeError as e:
            raise ValueError(f"{name}: expected a JSON object, e.g. '{{\"width_mult\": 0.75}}', got {text!r} ({e})") from None
        if not isinstance(value, dict):
            raise ValueError(f"{name}: expected a JSON object, got {text!r}")
        return value
    if isinstance(default, bool):
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}: expected true/false, got {text!r}")
    try:
        if isinstance(default, int) or name in _INT_FIELDS:
            f = float(t)
            if not f.is_integer():
                raise ValueError
            return int(f)
        if isinstance(default, float) or name in _FLOAT_FIELDS:
            return float(t)
        if isinstance(default, tuple):
            return tuple(float(x) for x in t.replace("(", "").replace(")", "").split(",") if x.strip())
    except ValueError:
        what = "integer" if isinstance(default, int) or name in _INT_FIELDS else \
            type(default).__name__ if default is not None else "number"
        raise ValueError(f"{name}: expected {'an' if what[0] in 'aeiou' else 'a'} {what}, got {text!r}") from None
    return t


_OPTIONAL_FIELDS = {f.name for f in fields(Recipe) if f.default is None}
_FLOAT_FIELDS = {"drop_rate", "tf_eps", "bn_momentum"}
_INT_FIELDS = {"crop_size"}


def apply_overrides(recipe: Recipe, overrides: Union[Mapping[str, Any], Iterable[str]]) -> Recipe:
    """Return ``recipe`` with fields replaced: a mapping, or ``"field=value"`` strings."""
    names = {f.name: f for f in fields(Recipe)}
    items: list[tuple[str, Any]] = []
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        for s in overrides:
            if "=" not in s:
                raise ValueError(f"--set expects field=value, got {s!r}")
            k, v = s.split("=", 1)
            items.append((k.strip().replace("-", "_"), v))
    kw = {}
    for k, v in items:
        if k not in names:
            import difflib
            close = difflib.get_close_matches(k, names, n=3)
            raise ValueError(f"unknown recipe field {k!r}" + (f"; did you mean {close}?" if close else ""))
        default = getattr(recipe, k)
        if default is None:
            default = names[k].default
        kw[k] = _parse_value(v, default, k) if isinstance(v, str) and not isinstance(default, str) else v
    return recipe.replace(**kw)


# --- optimizer -----------------------------------------------------------------------------------
def tf_to_torch_eps(tf_eps: float) -> float:
    """Convert a TensorFlow RMSprop epsilon to PyTorch's.

    TF computes ``g / sqrt(ms + eps_tf)``; PyTorch computes ``g / (sqrt(ms) + eps)``. Where it
    matters (``ms`` small against eps) the two agree when ``eps = sqrt(eps_tf)``: torchvision's
    MobileNetV3 recipe uses 0.0316 = sqrt(1e-3) for TF's 1e-3 (torchvision's references/classification).
    """
    return math.sqrt(tf_eps)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights with decay; biases, norm affine parameters and any other 1-D
    parameter (layer scale) without, as in the TF/timm recipes."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def create_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    groups = param_groups(model, recipe.weight_decay)
    if recipe.opt == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0)
    if recipe.opt == "adamw":
        eps = recipe.opt_eps if recipe.tf_eps is None else recipe.tf_eps  # Adam: eps outside sqrt in both
        return torch.optim.AdamW(groups, lr=recipe.lr, eps=eps)
    if recipe.opt == "rmsprop":
        eps = recipe.opt_eps if recipe.tf_eps is None else tf_to_torch_eps(recipe.tf_eps)
        return torch.optim.RMSprop(groups, lr=recipe.lr, alpha=recipe.rmsprop_alpha, eps=eps,
                                   momentum=recipe.momentum)
    raise ValueError(f"opt must be one of {OPTIMIZERS}, got {recipe.opt!r}")


# --- learning-rate schedule ----------------------------------------------------------------------
class LRSchedule:
    """The learning rate as a pure function of the optimizer step (so resuming is exact).

    Linear warm-up from ``lr * warmup_lr_factor``, then cosine to ``lr * min_lr_factor``, a step
    decay (``decay_rate`` every ``decay_epochs``), poly (``lr * (1 - t) ** poly_power``, t the
    fraction of post-warm-up steps done) or constant. LR noise (timm's
    ``--lr-noise``): inside ``lr_noise_range`` (fractions of training), the epoch's LR is
    multiplied by ``1 + N(0, lr_noise)`` clipped to [0.5, 1.5], drawn from a generator seeded by
    (seed, epoch).
    """

    def __init__(self, recipe: Recipe, steps_per_epoch: int):
        self.r, self.spe = recipe, max(1, steps_per_epoch)
        self.total = recipe.epochs * self.spe
        self.warmup = int(round(recipe.warmup_epochs * self.spe))

    def __call__(self, step: int) -> float:
        r = self.r
        if step < self.warmup:
            f = r.warmup_lr_factor + (1 - r.warmup_lr_factor) * step / self.warmup
            return r.lr * f
        epoch_f = step / self.spe
        if r.sched == "cosine":
            t = (step - self.warmup) / max(1, self.total - self.warmup)
            lr = r.lr * (r.min_lr_factor + (1 - r.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))
        elif r.sched == "step":
            lr = r.lr * r.decay_rate ** math.floor(epoch_f / r.decay_epochs)
        elif r.sched == "poly":  # torchvision's segmentation reference: PolynomialLR(power 0.9) after warm-up
            t = (step - self.warmup) / max(1, self.total - self.warmup)
            lr = r.lr * max(0.0, 1 - min(1.0, t)) ** r.poly_power
        else:
            lr = r.lr
        if r.lr_noise > 0:
            lo, hi = r.lr_noise_range
            epoch = int(epoch_f)
            if lo * r.epochs <= epoch < hi * r.epochs:
                g = torch.Generator().manual_seed(r.seed * 100003 + epoch)
                lr *= float(torch.clamp(1 + torch.randn((), generator=g) * r.lr_noise, 0.5, 1.5))
        return lr


# --- EMA and checkpoint averaging ----------------------------------------------------------------
class ModelEma:
    """Exponential moving average of a model's weights and buffers.

    ``ema = d * ema + (1 - d) * weights`` after every optimizer step, with
    ``d = min(decay, (1 + t) / (10 + t))`` when ``warmup`` (so early averages are not dominated by
    the random init). Integer buffers (BatchNorm's counters) are copied.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        self.updates += 1
        src = model.state_dict()
        for k, v in self.module.state_dict().items():
            s = src[k].detach()
            if v.dtype.is_floating_point:
                v.mul_(d).add_(s.to(v.dtype), alpha=1 - d)
            else:
                v.copy_(s)

    def state_dict(self) -> dict:
        return {"state_dict": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, d: Mapping) -> None:
        self.module.load_state_dict(d["state_dict"])
        self.updates = int(d["updates"])


def average_state_dicts(state_dicts: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating-point tensors; other tensors come from the last one
    (torchvision's ``average_checkpoints``)."""
    if not state_dicts:
        raise ValueError("average_state_dicts: no state dicts given")
    keys = list(state_dicts[-1])
    for i, sd in enumerate(state_dicts):
        if list(sd) != keys:
            raise ValueError(f"average_state_dicts: state dict {i} has different keys")
    out = {}
    for k in keys:
        last = state_dicts[-1][k]
        if last.dtype.is_floating_point:
            out[k] = (sum(sd[k].double() for sd in state_dicts) / len(state_dicts)).to(last.dtype)
        else:
            out[k] = last.clone()
    return out
