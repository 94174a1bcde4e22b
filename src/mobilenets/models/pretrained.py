"""timm's ``pretrained_cfg`` for our models: per name and per pretrained tag.

timm attaches to every model it builds a ``pretrained_cfg`` dict (and ``default_cfg``, the same
dict): where its weights live, their licence, and the preprocessing they expect (input size,
crop, interpolation, mean, std; a test-time size), the first conv and classifier names, the
pooled map's size. ``timm.data.resolve_data_config(model=...)`` reads it. ``create_model`` gives
our models the same dict, so timm's data pipeline (and ours, :func:`mobilenets.data.resolve_data_config`)
feeds them as timm feeds the same weights:

- a name we share with timm (``ModelEntry.reference["timm"]``) takes timm's cfg for its tag
  (``name.tag``; no tag: timm's default tag, the first), recorded in the generated
  :mod:`.timm_cfgs` (timm's values; ``first_conv`` / ``classifier`` renamed to our modules:
  ``stem.conv`` / ``head.fc`` where timm's layout says ``conv_stem`` / ``classifier``);
- any other name gets a cfg built from its :class:`~.info.ModelInfo` defaults (a task model:
  the record its builder set, its native size), timm's other fields at timm's defaults, our
  first conv and classifier, and the pooled size our model gives at the input size.

The :class:`~.info.ModelInfo` stays the record: ``create_model`` builds it *from* the cfg (mean,
std, input size, crop, interpolation, crop mode) and the cfg on the model is its view
(:func:`~.info.set_model_info` keeps them one). ``pretrained_cfg=`` (a dict or a tag) and
``pretrained_cfg_overlay=`` work as timm's :func:`resolve_pretrained_cfg` (timm's
``timm.models._builder.resolve_pretrained_cfg``): a dict is completed with timm's defaults, the
overlay replaces fields.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Mapping, Optional, Union

import torch.nn as nn

from . import timm_cfgs
from .info import CFG_FIELDS, ModelInfo
from .registry import get_entry, split_tag

#: timm's ``PretrainedCfg`` fields, in its order, with its defaults
FIELDS: dict = dict(timm_cfgs.FIELDS)
# timm's PretrainedCfg.to_dict(): None fields are left out, except these
_KEEP_NONE = ("pool_size", "first_conv", "classifier")
# weight sources: an overlay naming one resets custom_load (timm's resolve_pretrained_cfg)
_SOURCES = ("file", "url", "hf_hub_id", "hf_hub_filename")
# what timm drops from a features_only model's cfg (timm's pretrained_cfg_for_features)
_NOT_FOR_FEATURES = ("num_classes", "classifier", "global_pool")


def _check_fields(cfg: Mapping[str, Any], what: str) -> None:
    unknown = [k for k in cfg if k not in FIELDS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(FIELDS), n=1)
        raise ValueError(f"{what}: unknown field(s) {unknown}" + (f"; did you mean {close[0]!r}?" if close else "")
                         + f" (timm's pretrained_cfg fields: {', '.join(FIELDS)})")


def _to_dict(cfg: Mapping[str, Any]) -> dict:
    """timm's ``PretrainedCfg(**cfg).to_dict()``: every field (timm's defaults for the missing
    ones), ``None`` left out except :data:`_KEEP_NONE`; lists as tuples."""
    full = {**FIELDS, **cfg}
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in full.items()
            if v is not None or k in _KEEP_NONE}


def cfg_from_info(info: ModelInfo) -> dict:
    """The cfg of a name timm has no cfg for: timm's defaults, ``architecture`` the name, the
    preprocessing and classes of ``info``."""
    return _to_dict({"architecture": info.name, "num_classes": info.num_classes,
                     **{k: getattr(info, k) for k in CFG_FIELDS}})


def resolve_pretrained_cfg(name: str, pretrained_cfg: Union[None, str, Mapping[str, Any]] = None,
                           pretrained_cfg_overlay: Optional[Mapping[str, Any]] = None,
                           info: Optional[ModelInfo] = None) -> dict:
    """The cfg ``create_model(name, pretrained_cfg=, pretrained_cfg_overlay=)`` gives its model.

    Args:
        name: a registry name, optionally ``name.tag``.
        pretrained_cfg: ``None`` (the tag's cfg: timm's, else built from ``info``), a tag (as
            the ``.tag`` of the name), or a dict (completed with timm's defaults).
        pretrained_cfg_overlay: fields that replace the cfg's.
        info: the record a name timm has no cfg for takes its preprocessing from (default: a
            fresh :class:`ModelInfo` of the name, the ImageNet defaults).

    Raises:
        UnknownModelError / UnknownTagError: unknown name or tag (naming the closest).
        ValueError: a dict or overlay with a field timm's cfg does not have.
    """
    entry = get_entry(name)
    arch, tag = split_tag(name)
    if isinstance(pretrained_cfg, str):
        get_entry(f"{arch}.{pretrained_cfg}")  # checks the tag
        tag = pretrained_cfg
    if isinstance(pretrained_cfg, Mapping):
        _check_fields(pretrained_cfg, "pretrained_cfg")
        cfg = _to_dict(pretrained_cfg)
    elif entry.pretrained_cfgs:  # timm's (an architecture timm registers untagged: its one cfg, tag "")
        cfgs = {c.get("tag", ""): c for c in entry.pretrained_cfgs}
        cfg = _to_dict(cfgs[tag or next(iter(cfgs))])
    else:
        cfg = cfg_from_info(info or ModelInfo(entry.name, task=entry.task, family=entry.family))
    overlay = dict(pretrained_cfg_overlay or {})
    _check_fields(overlay, "pretrained_cfg_overlay")
    if not cfg.get("architecture"):
        overlay.setdefault("architecture", entry.name)
    if any(overlay.get(k) for k in _SOURCES):
        overlay.setdefault("custom_load", False)
    return _to_dict({**cfg, **overlay})


def default_num_classes(cfg: Mapping[str, Any]) -> int:
    """The classes a model built for ``cfg`` has unless told: the cfg's (its weights'), as timm
    passes them to the builder (none or negative: 1000)."""
    n = cfg.get("num_classes")
    return int(n) if n is not None and n >= 0 else 1000


def info_from_cfg(cfg: Mapping[str, Any], base: ModelInfo) -> ModelInfo:
    """``base`` (the model's name, task, family, channels, classes) with the preprocessing of
    ``cfg``; a cfg for another channel count (timm's are for RGB) is adapted as
    :meth:`ModelInfo.replace` adapts ``in_chans``."""
    pre = {k: (tuple(cfg[k]) if isinstance(cfg[k], list) else cfg[k]) for k in CFG_FIELDS if cfg.get(k) is not None}
    chans = pre.get("input_size", base.input_size)[0]
    return ModelInfo(**{**base.__dict__, "in_chans": chans, **pre}).replace(in_chans=base.in_chans)


def _first_conv(model: nn.Module, in_chans: int) -> Optional[str]:
    return next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == in_chans),
                None)


def _classifier(model: nn.Module) -> Optional[str]:
    get = getattr(model, "get_classifier", None)
    fc = get() if callable(get) else None
    return next((n for n, m in model.named_modules() if m is fc), None) if fc is not None else None


def _pool_size(model: nn.Module, input_size) -> Optional[tuple[int, int]]:
    """The final map's size at ``input_size``: every stride-2 step of our models rounds up
    (``ceil``), so the size is the input's over the last level's reduction, rounded up."""
    info = getattr(model, "feature_info", None)
    if not info:
        return None
    r = info[-1]["reduction"]
    return (math.ceil(input_size[-2] / r), math.ceil(input_size[-1] / r))


def model_cfg(model: nn.Module, cfg: Mapping[str, Any], info: ModelInfo, features: bool = False) -> dict:
    """The cfg ``model`` carries: ``cfg`` with ``architecture`` our name, ``first_conv`` and
    ``classifier`` naming ``model``'s modules, ``pool_size`` from the model where the cfg has
    none; for a ``features_only`` extractor without the classifier fields (as timm's)."""
    out = dict(cfg)
    out["architecture"] = info.name
    out["first_conv"] = _first_conv(model, info.in_chans)
    if features:
        for k in _NOT_FOR_FEATURES:
            out.pop(k, None)
    else:
        out["classifier"] = _classifier(model)
        if out.get("pool_size") is None:
            out["pool_size"] = _pool_size(model, info.input_size)
    return out
