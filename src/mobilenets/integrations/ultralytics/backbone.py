"""The backbone module Ultralytics' YAML parser builds: any registry classification backbone,
width-scaled through ``width_mult``, returning its stride-4/8/16/32 maps (P2..P5) as a list.

Nothing here imports Ultralytics: the module is a plain ``nn.Module`` (so a saved YOLO ``.pt``
unpickles it from ``mobilenets`` alone), and :mod:`.hook` tells Ultralytics' parser about it.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import numbers
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from ...factory import create_model
from ...models import FeatureExtractor, UnknownModelError, get_entry, list_models
from ...models.registry import NOT_TASK_BACKBONES
from ...weights import CheckpointError, LoadReport, format_key_problems, load_weights

#: strides of the maps a backbone row yields: P2..P5, the tutorial layout's layers 1-4
LEVEL_STRIDES = (4, 8, 16, 32)
#: the ones YOLO11's neck and head read (P3, P4, P5)
HEAD_STRIDES = (8, 16, 32)
#: BatchNorm settings Ultralytics gives every YOLO model (``initialize_weights``); a loaded
#: backbone checkpoint is switched to them, as the trainer's rebuilt model would be
YOLO_BN = dict(eps=1e-3, momentum=0.03)
WIDTH_RANGE = (0.0, 2.0)
#: options the backbone row sets itself
RESERVED = {"width_mult": "width", "num_classes": None, "features_only": None, "out_indices": None,
            "feature_location": None, "pretrained": "pretrained_backbone= of yolo(), or "
            "MobileNetBackbone.load_pretrained()"}


def backbone_entry(name: Any):
    """The registry entry of classification backbone ``name``; an unknown name raises
    :class:`~mobilenets.UnknownModelError` naming the closest backbones, a task model a
    ``ValueError``."""
    if not isinstance(name, str):
        raise TypeError(f"backbone must be a registry name (str), got {type(name).__name__} {name!r}")
    backbones = list_models(task="classification")
    try:
        entry = get_entry(name)
    except UnknownModelError:
        close = difflib.get_close_matches(name, backbones, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"unknown backbone {name!r}{hint} (see mobilenets.list_models("
                                f"task='classification'): {len(backbones)} backbones)") from None
    if entry.task != "classification":
        raise ValueError(f"{name!r} is a {entry.task} model; a YOLO backbone is a classification backbone "
                         f"(e.g. {entry.defaults.get('backbone', backbones[0])})")
    if entry.family in NOT_TASK_BACKBONES:
        raise ValueError(f"{name!r} is not offered as a YOLO backbone: {NOT_TASK_BACKBONES[entry.family]}")
    return entry


def check_width(width: Any) -> float:
    """``width`` as a float in (0, 2]; anything else is a ``ValueError`` / ``TypeError``."""
    if isinstance(width, bool) or not isinstance(width, numbers.Real):
        raise TypeError(f"width must be a number in (0, 2] (e.g. 0.25, 0.5, 0.75, 1.0, 1.5), "
                        f"got {type(width).__name__} {width!r}")
    lo, hi = WIDTH_RANGE
    if not lo < float(width) <= hi:
        raise ValueError(f"width must be in (0, 2] (a width factor such as 0.25, 0.5, 0.75, 1.0, 1.5), "
                         f"got {width}")
    return float(width)


def width_mult_of(name: str, width: float) -> float:
    """The ``width_mult`` that builds ``name`` scaled by ``width``: the factor multiplies the
    name's own width (``mobilenetv3_large_075`` at ``width=1.0`` is itself), and the channels are
    rounded once, by the model's ``make_divisible`` rule, as every ``width_mult`` is."""
    return float(backbone_entry(name).defaults.get("width_mult", 1.0)) * check_width(width)


def _check_kwargs(kwargs: Any) -> dict:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise TypeError(f"the backbone row's third argument is a mapping of backbone options "
                        f"(e.g. {{drop_path_rate: 0.1}}), got {type(kwargs).__name__} {kwargs!r}")
    for key, instead in RESERVED.items():
        if key in kwargs:
            fix = f"pass {instead}" if instead else "it is set by the YOLO backbone"
            raise TypeError(f"backbone option {key}={kwargs[key]!r} is not accepted here: {fix}")
    return dict(kwargs)


def level_indices(feature_info: list[dict], name: str, strides=LEVEL_STRIDES) -> list[int]:
    """Indices into ``feature_info`` of the levels at ``strides``; a missing stride (e.g. a
    backbone built with ``output_stride=16``) is a ``ValueError`` saying which are there."""
    at = {f["reduction"]: i for i, f in enumerate(feature_info)}
    missing = [s for s in strides if s not in at]
    if missing:
        have = ", ".join(str(f["reduction"]) for f in feature_info)
        raise ValueError(f"backbone {name} has no stride-{'/'.join(map(str, missing))} feature level (its "
                         f"levels are at strides {have}); YOLO's neck and head read strides "
                         f"{'/'.join(map(str, HEAD_STRIDES))}: build it without output_stride / dilated")
    return [at[s] for s in strides]


class MobileNetBackbone(nn.Module):
    """A registry backbone as one YOLO layer: ``x -> [P2, P3, P4, P5]`` (strides 4, 8, 16, 32).

    In a model YAML: ``- [-1, 1, MobileNetBackbone, [mobilenetv4_conv_small, 0.75]]`` (after
    :func:`mobilenets.integrations.ultralytics.register`), optionally with a mapping of backbone
    options as a third argument (``{drop_path_rate: 0.1}``).

    Args:
        model: a classification backbone of the registry (``mobilenets.list_models(
            task="classification")``).
        width: width factor in (0, 2], applied through ``width_mult`` (channels rounded by the
            model's own rule: multiples of 8, Mobile-Former's official 4 / 8; the MobileNetV4
            hybrids' attention keeps its heads and key/value dims, as timm's
            ``channel_multiplier`` does). It multiplies the name's own width.
        kwargs: backbone options for :func:`mobilenets.create_model` (``drop_path_rate``,
            ``in_chans``, family options); not ``width_mult`` / ``num_classes`` / feature options.

    Attributes:
        width_list: channels of the four maps. strides: their strides (4, 8, 16, 32).
        body: the :class:`~mobilenets.FeatureExtractor` (its ``.model`` is the pruned backbone).
    """

    def __init__(self, model: str = "mobilenetv4_conv_small", width: float = 1.0,
                 kwargs: Optional[dict] = None):
        super().__init__()
        opts = _check_kwargs(kwargs)
        net = create_model(model, num_classes=0, width_mult=width_mult_of(model, width), **opts)
        self.body = FeatureExtractor(net, level_indices(net.feature_info, model))
        self.model_name, self.width, self.kwargs = model, float(width), opts
        self.width_list = list(self.body.width_list)
        self.strides = [f["reduction"] for f in self.body.feature_info]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The P2..P5 maps of a ``(N, C, H, W)`` batch."""
        return self.body(x)

    def extra_repr(self) -> str:
        return f"{self.model_name!r}, width={self.width:g}, width_list={self.width_list}"

    def load_pretrained(self, source) -> LoadReport:
        """Load a classification checkpoint of the same backbone (ours, e.g. ``mobilenets
        train``'s ``best.pt``, or timm's / torchvision's layout; any classifier) into the
        backbone. Every backbone weight must come from the file (a missing or mis-shaped one is a
        :class:`~mobilenets.CheckpointError` listing them); the classifier and layers deeper
        than stride 32 are ignored. BatchNorm is then set to Ultralytics' eps 1e-3 / momentum
        0.03, as every YOLO model (and the trainer's rebuilt copy) has it."""
        # the key-layout converters walk the whole model (head included): load into an unpruned
        # twin, then take the part this backbone keeps
        full = create_model(self.model_name, num_classes=0, width_mult=width_mult_of(self.model_name, self.width),
                            **self.kwargs)
        report = load_weights(full, source, strict=False)
        kept = self.body.model.state_dict()
        missing = [k for k in report.missing if k in kept]
        mismatched = [m for m in report.mismatched if m.split(":")[0] in kept]
        if missing or mismatched:
            raise CheckpointError(f"{source}: not a checkpoint of the backbone {self.model_name} at width "
                                  f"{_fmt_width(self.width)}{self._what_it_is(source)}:"
                                  + format_key_problems(missing, [], mismatched))
        full_sd = full.state_dict()
        self.body.model.load_state_dict({k: full_sd[k] for k in kept}, strict=True)
        self.body.model.set_bn(**YOLO_BN)
        unused = [k for k in full_sd if k not in kept]
        return LoadReport(report.layout, len(kept), [], report.unexpected + unused, [])

    def _what_it_is(self, source) -> str:
        """What a checkpoint that does not fit holds, in words, and the fix: the model and width
        a ``mobilenets train`` checkpoint records in its recipe, else the width (of this
        backbone) whose shapes it fits; ``""`` when neither says."""
        found = _recorded_architecture(source)
        if found is None:
            width = _fitting_width(source, self.model_name, self.kwargs)
            found = None if width is None else (self.model_name, width, False)
        if found is None:
            return ""
        name, width, recorded = found
        mult = width_mult_of(self.model_name, self.width)
        train = (f"mobilenets train --model {self.model_name} --set model_kwargs='{{\"width_mult\": {mult:g}}}'"
                 if mult != 1.0 else f"mobilenets train --model {self.model_name}")
        if name != self.model_name:
            return (f"\n  the checkpoint is {name} at width {_fmt_width(width)} (its training recipe), the backbone "
                    f"is {self.model_name}: pass backbone={name!r}, width={_fmt_width(width)}, or a checkpoint "
                    f"of {self.model_name} ({train})")
        how = "its training recipe" if recorded else "the width its shapes fit"
        return (f"\n  the checkpoint is {name} at width {_fmt_width(width)} ({how}), the backbone is width "
                f"{_fmt_width(self.width)}: train the classifier at width {_fmt_width(self.width)} ({train}), "
                f"or pass width={_fmt_width(width)}")

    def __setstate__(self, state: dict) -> None:
        # a YOLO checkpoint unpickled in a fresh process: its model.yaml names this module, and
        # Ultralytics rebuilds from the YAML (model.train()), so the parser must know it again
        super().__setstate__(state)
        for fn in AFTER_UNPICKLE:
            fn()


def _fmt_width(width: float) -> str:
    text = f"{width:g}"
    return text if "." in text or "e" in text else text + ".0"


def _recorded_architecture(source) -> Optional[tuple[str, float, bool]]:
    """``(model, width, True)`` a ``mobilenets train`` checkpoint records: its recipe's
    ``model`` and ``model_kwargs["width_mult"]`` (as a factor of the name's own width, as
    ``width`` counts); None for anything else."""
    from ...weights.checkpoint import load_checkpoint

    obj = source
    if not isinstance(source, dict):
        try:
            obj = load_checkpoint(source)
        except (OSError, ValueError):
            return None
    recipe = obj.get("recipe") if isinstance(obj, dict) else None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("model"), str):
        return None
    name = recipe["model"]
    try:
        own = float(get_entry(name).defaults.get("width_mult", 1.0))
    except UnknownModelError:
        return None
    kwargs = recipe.get("model_kwargs") if isinstance(recipe.get("model_kwargs"), dict) else {}
    return name, float(kwargs.get("width_mult", own)) / own, True


#: the widths :func:`_fitting_width` tries on a checkpoint that records none
PROBE_WIDTHS = (0.25, 0.35, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


def _fitting_width(source, model: str, kwargs: dict) -> Optional[float]:
    """The width (of :data:`PROBE_WIDTHS`) at which every weight of backbone ``model`` fits the
    checkpoint, tried on the ``meta`` device (no memory); None if none does."""
    import warnings

    for width in PROBE_WIDTHS:
        try:
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # loading into meta tensors is a no-op: only the shapes count
                net = create_model(model, num_classes=0, width_mult=width_mult_of(model, width), **kwargs)
                report = load_weights(net, source, strict=False)
        except Exception:  # noqa: BLE001 - a width that cannot be built or read just does not fit
            continue
        if not report.missing and not report.mismatched:
            return width
    return None


def _alias(cls_name: str, model: str) -> type:
    """A class named as the widely copied tutorial's module (``MobileNetV4ConvSmall`` with
    args ``[0.75]``), building ``model`` through :class:`MobileNetBackbone`."""
    def __init__(self, width: float = 1.0, kwargs: Optional[dict] = None):
        MobileNetBackbone.__init__(self, model, width, kwargs)

    doc = f"``{model}`` as the tutorial's ``{cls_name}`` YAML module (args: ``[width]``)."
    return type(cls_name, (MobileNetBackbone,), {"__init__": __init__, "__doc__": doc,
                                                 "__module__": __name__, "__qualname__": cls_name})


#: the tutorial's module names -> our backbones (so YAMLs written for it build unchanged)
TUTORIAL_NAMES = {"MobileNetV4ConvSmall": "mobilenetv4_conv_small",
                  "MobileNetV4ConvMedium": "mobilenetv4_conv_medium",
                  "MobileNetV4ConvLarge": "mobilenetv4_conv_large",
                  "MobileNetV4HybridMedium": "mobilenetv4_hybrid_medium",
                  "MobileNetV4HybridLarge": "mobilenetv4_hybrid_large"}
MobileNetV4ConvSmall = _alias("MobileNetV4ConvSmall", "mobilenetv4_conv_small")
MobileNetV4ConvMedium = _alias("MobileNetV4ConvMedium", "mobilenetv4_conv_medium")
MobileNetV4ConvLarge = _alias("MobileNetV4ConvLarge", "mobilenetv4_conv_large")
MobileNetV4HybridMedium = _alias("MobileNetV4HybridMedium", "mobilenetv4_hybrid_medium")
MobileNetV4HybridLarge = _alias("MobileNetV4HybridLarge", "mobilenetv4_hybrid_large")

#: every YAML module name :func:`register` makes known to Ultralytics' parser
#: called after a backbone is unpickled: :mod:`.hook` adds its parser registration here when it
#: is imported (the package imports it, so before any backbone is built or unpickled)
AFTER_UNPICKLE: list[Callable[[], None]] = []

MODULES: dict[str, type] = {"MobileNetBackbone": MobileNetBackbone,
                            **{n: globals()[n] for n in TUTORIAL_NAMES}}


def row_args(module: str, args: list, in_chans: int = 3) -> list:
    """The YAML row's ``args`` for ``module``, checked against its signature, with ``in_chans``
    added to the backbone options when it is not 3 (Ultralytics passes a custom module its YAML
    args only, not the input channels)."""
    cls = MODULES[module]
    try:
        bound = inspect.signature(cls).bind(*args)
    except TypeError as e:
        raise TypeError(f"{module} row args {list(args)}: {e} (expected {module}{inspect.signature(cls)})") from None
    if in_chans != 3:
        bound.apply_defaults()
        bound.arguments["kwargs"] = {**_check_kwargs(bound.arguments["kwargs"]), "in_chans": in_chans}
    return list(bound.args)


def row_channels(module: str, args: list) -> list[int]:
    """``width_list`` of the backbone a YAML row builds, computed on the ``meta`` device (no
    memory) and remembered per row (the trainer rebuilds the model from the same YAML); bad
    arguments raise as building would."""
    return list(_row_channels(module, json.dumps(args, sort_keys=True)))


@functools.lru_cache(maxsize=256)
def _row_channels(module: str, args_json: str) -> tuple[int, ...]:
    with torch.device("meta"):
        return tuple(MODULES[module](*json.loads(args_json)).width_list)
