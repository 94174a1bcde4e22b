"""The typed training :class:`Recipe`: every field of a run, validated (a ``ValueError``
naming the field), with plain-dict round trips for checkpoints and ``field=value`` overrides
from the command line (:func:`apply_overrides`). The named recipes are in :mod:`.recipes`, the
optimizer and schedule in :mod:`.optim`, EMA and averaging in :mod:`.ema`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Mapping, Optional, Union

from ..data import IMAGENET_CROP_PCT, IMAGENET_MEAN, IMAGENET_STD


OPTIMIZERS = ("sgd", "adamw", "rmsprop")
SCHEDULES = ("cosine", "step", "poly", "constant")
AUTO_AUGMENTS = ("none", "autoaugment", "randaugment", "trivialaugment")
DATASETS = ("digits", "digit-clutter", "imagefolder", "fake", "digit-scenes", "folder")


@dataclass
class Recipe:
    """Everything that defines a training run. Every field can be overridden from the command
    line (``--set lr=0.01`` or ``--lr 0.01``)."""

    # model and data
    task: str = "classify"                    # classify | detect | segment
    model: str = "mobilenetv4_conv_small"
    model_kwargs: dict = field(default_factory=dict)  # more create_model options (JSON on the command line)
    pretrained: Optional[str] = None          # checkpoint to start from (classifier may differ)
    qat: Optional[str] = None                 # quantization-aware fine-tune for onnx | executorch | litert
    #                                           (needs pretrained; mobilenets.train.qat)
    dataset: str = "digits"                   # digits | digit-clutter | imagefolder | fake
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
    scene_images: int = 2000                  # digit-scenes / digit-clutter: training images (generated)
    scene_val_images: int = 500               # digit-scenes / digit-clutter: validation (and held-out) images
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
        from .qat import QAT_TARGETS
        need(self.qat is None or self.qat in QAT_TARGETS,
             f"qat must be one of {', '.join(QAT_TARGETS)} (or None), got {self.qat!r}")
        need(self.qat is None or bool(self.pretrained),
             f"qat={self.qat} fine-tunes a trained fp32 model: give pretrained=CHECKPOINT (--pretrained)")
        need(self.qat is None or self.task == "classify",
             f"qat is for classifiers (task classify), got task {self.task!r}")
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
