"""What a model is, in one frozen record: :class:`ModelInfo`.

``create_model`` sets it once (name, task, family, backbone, input channels, classes, and the
preprocessing the model expects: mean, std, input size, crop, interpolation); a training run
replaces the preprocessing with its recipe's and saves the record in every checkpoint (and the
ONNX export in its metadata), so deployment, prediction and the data pipeline read one place
instead of attributes stamped on modules. It carries what timm's ``pretrained_cfg`` and
torchvision's ``Weights.transforms()`` carry.

A model ``create_model`` built also carries timm's ``pretrained_cfg`` (and ``default_cfg``, the
same dict), so timm's own data pipeline reads the right preprocessing from our models: that dict
is a *view* of the record (its :data:`CFG_FIELDS` are the record's, rewritten by
:func:`set_model_info` whenever the record changes) plus what only timm's cfg has (weights'
source, licence, test size, first conv / classifier names; see :mod:`.pretrained`).

:func:`model_info` reads it from any module; a module that ``create_model`` did not build (a
torchvision model, a wrapper) gets a record derived from its layers (input channels from its
first convolution, classes from its last linear layer) and the ImageNet defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch.nn as nn

#: ImageNet normalisation and the standard 224 / 256 centre crop (torchvision's and timm's defaults)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_CROP_PCT = 0.875

TASKS = ("classification", "detection", "segmentation")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
#: timm's eval crop modes: "center" (resize the shorter side, crop), "squash" (resize both sides,
#: crop), "border" (resize the longer side, pad, crop; see :func:`mobilenets.data.create_transform`)
CROP_MODES = ("center", "squash", "border")
#: the record's fields timm's ``pretrained_cfg`` carries under the same names
CFG_FIELDS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")


@dataclass(frozen=True)
class ModelInfo:
    """A model's identity and expected preprocessing.

    Attributes:
        name: registry name (``mobilenetv4_conv_small``) or, for a foreign module, its class.
        task: ``classification``, ``detection`` or ``segmentation``.
        family: ``mobilenetv1`` ... ``mobileformer``; ``ssdlite``, ``fasterrcnn``, ``retinanet``,
            ``lraspp``, ``deeplabv3``, ``fcn`` for task models.
        backbone: a task model's classification backbone (None for a classifier).
        in_chans: input channels. num_classes: outputs (detection: with the background).
        mean, std: per-channel normalisation of inputs in [0, 1].
        input_size: ``(C, H, W)`` the model works at (a detector's native size).
        crop_pct: centre-crop fraction at evaluation (resize the shorter side to
            ``size / crop_pct``, then crop ``size``; 1.0: resize only).
        interpolation: resize interpolation.
        crop_mode: how the crop is taken (one of :data:`CROP_MODES`; timm's ``crop_mode``).
    """

    name: str
    task: str = "classification"
    family: str = ""
    backbone: Optional[str] = None
    in_chans: int = 3
    num_classes: int = 1000
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    input_size: tuple[int, int, int] = (3, 224, 224)
    crop_pct: float = IMAGENET_CROP_PCT
    interpolation: str = "bilinear"
    crop_mode: str = "center"

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"ModelInfo({self.name!r}): {msg}")
        need(self.task in TASKS, f"task must be one of {TASKS}, got {self.task!r}")
        need(self.in_chans >= 1, f"in_chans must be >= 1, got {self.in_chans}")
        need(len(self.mean) == len(self.std) == self.in_chans,
             f"mean and std need one value per input channel ({self.in_chans}), got {len(self.mean)} and "
             f"{len(self.std)}")
        need(len(self.input_size) == 3 and self.input_size[0] == self.in_chans,
             f"input_size must be (in_chans, H, W) = ({self.in_chans}, H, W), got {self.input_size}")
        need(0 < self.crop_pct <= 1, f"crop_pct must be in (0, 1], got {self.crop_pct}")
        need(self.interpolation in INTERPOLATIONS,
             f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        need(self.crop_mode in CROP_MODES, f"crop_mode must be one of {CROP_MODES}, got {self.crop_mode!r}")

    @property
    def img_size(self) -> tuple[int, int]:
        """``(H, W)`` of :attr:`input_size`."""
        return self.input_size[1], self.input_size[2]

    def replace(self, **changes: Any) -> "ModelInfo":
        """A copy with fields changed. Changing ``in_chans`` alone also resizes ``input_size``,
        ``mean`` and ``std`` (one value per channel: the average of the old ones, as timm
        does for a grey-scale model)."""
        c = changes.get("in_chans", self.in_chans)
        if c != self.in_chans:
            changes.setdefault("input_size", (c, *self.input_size[1:]))
            for k in ("mean", "std"):
                v = getattr(self, k)
                changes.setdefault(k, (round(sum(v) / len(v), 4),) * c)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain types only (lists for tuples): for checkpoints and export metadata."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelInfo":
        """The record saved by :meth:`to_dict` (unknown keys are ignored: a newer version's)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names})


def trained_info(info: ModelInfo, saved: Any = None, recipe: Optional[Mapping[str, Any]] = None) -> ModelInfo:
    """``info`` (a freshly built model's) as a training checkpoint describes the trained model:
    the record the checkpoint saved (``saved``, a :meth:`ModelInfo.to_dict`), else the
    preprocessing its ``recipe`` (a dict: ``mean``, ``std``, ``img_size``, ``crop_pct``) trained
    with; the built model's name, task, family, backbone and classes are kept."""
    if isinstance(saved, Mapping):
        s = ModelInfo.from_dict(saved)
        return info.replace(mean=s.mean, std=s.std, input_size=(info.in_chans, *s.img_size),
                            crop_pct=s.crop_pct, interpolation=s.interpolation, crop_mode=s.crop_mode)
    if not recipe:
        return info
    # training validates with mobilenets.data.eval_transform: a bilinear resize and a centre crop
    changes: dict = {"interpolation": "bilinear", "crop_mode": "center"}
    for k in ("mean", "std"):
        if recipe.get(k) is not None and len(recipe[k]) == info.in_chans:
            changes[k] = tuple(recipe[k])
    if recipe.get("img_size"):
        changes["input_size"] = (info.in_chans, int(recipe["img_size"]), int(recipe["img_size"]))
    if recipe.get("crop_pct"):
        changes["crop_pct"] = float(recipe["crop_pct"])
    return info.replace(**changes)


def set_model_info(model: nn.Module, info: ModelInfo,
                   pretrained_cfg: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """Attach ``info`` to ``model`` (replacing any); returns ``model``.

    The model's timm ``pretrained_cfg`` (``pretrained_cfg`` when given, else the one it carries,
    if any) is re-attached as ``model.pretrained_cfg`` and ``model.default_cfg`` (one dict, as
    timm has it) with its :data:`CFG_FIELDS` taken from ``info``: the record stays the one source
    of the preprocessing, the cfg its timm-shaped view."""
    if not isinstance(info, ModelInfo):
        raise TypeError(f"expected a ModelInfo, got {type(info).__name__}")
    model.__dict__["model_info"] = info
    cfg = model.__dict__.get("pretrained_cfg") if pretrained_cfg is None else pretrained_cfg
    if isinstance(cfg, Mapping):
        view = {**cfg, **{k: getattr(info, k) for k in CFG_FIELDS}}
        model.__dict__["pretrained_cfg"] = model.__dict__["default_cfg"] = view
    return model


def model_info(module: nn.Module) -> ModelInfo:
    """The :class:`ModelInfo` of ``module``: the one ``create_model`` (or a training run, or a
    checkpoint) attached, else one derived from it with the ImageNet defaults: its ``in_chans``
    attribute when it declares one (timm-style modules do), else its first convolution's input
    channels; its last linear layer's outputs as the classes."""
    info = module.__dict__.get("model_info")
    if isinstance(info, ModelInfo):
        return info
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    declared = getattr(module, "in_chans", None)
    c = int(declared) if isinstance(declared, int) and declared > 0 else (convs[0].in_channels if convs else 3)
    n = linears[-1].out_features if linears else 0
    return ModelInfo(name=type(module).__name__, num_classes=n).replace(in_chans=c)
