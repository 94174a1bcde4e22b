"""``create_model``: registry name -> model, with weights and feature extraction."""

from __future__ import annotations

import difflib
import inspect
import os
import re
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from .models.features import FeatureExtractor
from .models.info import ModelInfo, model_info, set_model_info, trained_info
from .models.pretrained import default_num_classes, info_from_cfg, model_cfg, resolve_pretrained_cfg
from .models.registry import get_entry
from .weights import load_weights, read_checkpoint
from .weights.checkpoint import CheckpointError, load_checkpoint

Pretrained = Union[None, bool, str, Path, dict]


def create_model(name: str, pretrained: Pretrained = None, num_classes: Optional[int] = None,
                 in_chans: int = 3, features_only: bool = False,
                 out_indices: Optional[Sequence[int]] = None, feature_location: str = "",
                 strict: bool = True, pretrained_cfg: Union[None, str, dict] = None,
                 pretrained_cfg_overlay: Optional[dict] = None, *, device: Union[None, str, torch.device] = None,
                 dtype: Optional[torch.dtype] = None, checkpoint_path: Union[None, str, Path] = None,
                 feature_cls: Optional[str] = None, scriptable: Optional[bool] = None,
                 exportable: Optional[bool] = None, no_jit: Optional[bool] = None,
                 cache_dir: Union[None, str, Path] = None, **kwargs) -> nn.Module:
    """Build a registered model.

    Args:
        name: registry name (see :func:`mobilenets.list_models`), optionally with a pretrained
            tag, as timm's: ``mobilenetv3_large_100.ra_in1k`` (see
            :func:`mobilenets.list_pretrained`). The model carries that tag's timm
            ``pretrained_cfg`` (no tag: timm's default tag) and its :class:`ModelInfo` takes the
            cfg's preprocessing (see :mod:`mobilenets.models.pretrained`).
        pretrained: ``None``/``False`` for random init, or a checkpoint: a path
            (``.pth/.pt/.bin/.safetensors``), ``"hf-hub:org/name"`` or a state dict, in our,
            timm's, torchvision's or the official Mobile-Former layout. No weights are
            downloaded implicitly.
        num_classes: classifier outputs (0: none; default: the model's own, 0 for mobilenetv5_300m
            and its encoder as timm, else the tag's, e.g. 11221 for ``mobilenetv3_large_100.miil_in21k``,
            else 1000). For detectors: classes including the background, as torchvision counts
            them (default 91, COCO).
        in_chans: input channels.
        features_only: return a :class:`FeatureExtractor` giving one map per feature level.
        out_indices: the feature levels to return (default: all).
        feature_location: with ``features_only``: ``""`` (each level's output) or
            ``"expansion"`` (the expanded map inside each level's last block; see
            :class:`FeatureExtractor`).
        strict: passed to :func:`mobilenets.load_weights`.
        pretrained_cfg: timm's: a tag (as ``name.tag``) or a cfg dict (completed with timm's
            defaults) instead of the name's.
        pretrained_cfg_overlay: timm's: cfg fields to replace (``dict(crop_pct=1.0)``); the
            preprocessing ones reach the model's :class:`ModelInfo`.
        device, dtype: where and in which dtype the parameters and buffers are (timm's
            ``device=`` / ``dtype=``; a ``torch.device`` context works too).
        checkpoint_path: a weights file loaded after the model is built (timm's keyword; the
            same loader as ``pretrained``).
        feature_cls: with ``features_only``, timm's feature wrapper name: ``"list"``,
            ``"getter"``, ``"hook"``, ``"fx"`` (all give the list of maps; one wrapper serves
            them here) or ``"dict"`` (maps keyed by module path).
        scriptable, exportable, no_jit: timm's layer-config flags, accepted: every model here
            scripts and exports as built (export forms are swapped in by the exporters).
        cache_dir: where ``hf-hub:`` weights are cached (the Hugging Face default otherwise).
        **kwargs: model options (timm's ``global_pool``, ``drop_rate``, ``drop_path_rate``,
            ``bn_momentum`` / ``bn_eps`` included): ``width_mult``, ``drop_rate``, ``drop_path_rate``,
            ``output_stride``, and family options (V3: ``reduced_tail``, ``dilated``). Task
            models (``ssdlite320_*``, ``fasterrcnn_*``, ``retinanet_*``) take their own options,
            e.g. ``pretrained_backbone=``, ``trainable_backbone_layers=`` (see
            :mod:`mobilenets.tasks.detection`).

    Raises:
        KeyError/ValueError: unknown name (with the closest matches) or bad options.
    """
    entry = get_entry(name)
    for flag, value in (("scriptable", scriptable), ("exportable", exportable), ("no_jit", no_jit)):
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"{flag} must be True, False or None, got {value!r}")
    _timm_bn_args(kwargs, entry)
    if cache_dir is not None:
        os.environ.setdefault("HF_HUB_CACHE", str(cache_dir))
    if pretrained is True:
        hub = resolve_pretrained_cfg(name, pretrained_cfg, pretrained_cfg_overlay).get("hf_hub_id")
        raise ValueError(
            f"pretrained=True: mobilenets downloads nothing implicitly; pass a checkpoint path or "
            f"'hf-hub:org/name' (" + (f"this tag's weights: pretrained='hf-hub:{hub}')" if hub else
                                      f"e.g. a timm repo for {entry.reference.get('timm', name)})"))
    if entry.task != "classification":
        if features_only or out_indices is not None or feature_location or in_chans != 3:
            raise ValueError(f"{name} is a {entry.task} model: features_only, out_indices, "
                             f"feature_location and in_chans are backbone options (pass them to a "
                             f"classification model)")
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        try:
            model = entry.builder(pretrained=pretrained or None, strict=strict, **kwargs)
        except TypeError as e:
            raise TypeError(f"{name}: {e}{_keyword_hint(e, entry)}") from None
        # the builder knows the task model's shape (backbone, classes, native size); the name is ours
        info = model_info(model).replace(name=entry.name, task=entry.task, family=entry.family)
        cfg = resolve_pretrained_cfg(name, pretrained_cfg, pretrained_cfg_overlay, info=info)
        info = info_from_cfg(cfg, info)
        model = _place(model, device, dtype)
        return set_model_info(model, info, model_cfg(model, cfg, info))
    cfg = resolve_pretrained_cfg(name, pretrained_cfg, pretrained_cfg_overlay)
    if num_classes is None:  # the model's own default (an encoder has no classifier), else the tag's
        num_classes = entry.defaults.get("num_classes", default_num_classes(cfg))
    try:
        model = entry.builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as e:
        raise TypeError(f"{name}: {e}{_keyword_hint(e, entry)}") from None
    info = info_from_cfg(cfg, ModelInfo(name=entry.name, family=entry.family, num_classes=num_classes)
                         .replace(in_chans=in_chans))
    set_model_info(model, info, model_cfg(model, cfg, info))
    if pretrained is not None and pretrained is not False:
        load_weights(model, pretrained, strict=strict)
    if checkpoint_path:
        load_weights(model, checkpoint_path, strict=strict)
    model = _place(model, device, dtype)
    if features_only:
        fx = FeatureExtractor(model, out_indices, feature_location, output=_feature_output(feature_cls))
        model = set_model_info(fx, info, model_cfg(fx, model.pretrained_cfg, info, features=True))
    elif feature_cls is not None:
        raise ValueError(f"feature_cls is only used with features_only=True, got feature_cls={feature_cls!r}")
    elif out_indices is not None or feature_location:
        raise ValueError(f"out_indices and feature_location are only used with features_only=True, "
                         f"got out_indices={out_indices}, feature_location={feature_location!r}")
    return model


#: timm's ``feature_cls`` names -> what our one extractor returns
FEATURE_CLS = {"list": "list", "getter": "list", "hook": "list", "fx": "list", "dict": "dict"}


def _feature_output(feature_cls) -> str:
    if feature_cls is None or feature_cls is FeatureExtractor:
        return "list"
    key = feature_cls.lower() if isinstance(feature_cls, str) else feature_cls
    if key not in FEATURE_CLS and not (isinstance(key, str) and "hook" in key):
        raise ValueError(f"feature_cls must be one of {', '.join(FEATURE_CLS)} (timm's wrapper names), got "
                         f"{feature_cls!r}")
    return FEATURE_CLS.get(key, "list")


def _timm_bn_args(kwargs: dict, entry) -> None:
    """timm's ``bn_momentum`` / ``bn_eps`` -> our ``norm_momentum`` / ``norm_eps`` (same meaning:
    PyTorch's BatchNorm momentum and epsilon), for builders that take them."""
    for timm_key, ours in (("bn_momentum", "norm_momentum"), ("bn_eps", "norm_eps")):
        if timm_key in kwargs and ours in entry.options:
            if ours in kwargs:
                raise TypeError(f"pass {timm_key} or {ours}, not both")
            kwargs[ours] = kwargs.pop(timm_key)


def _place(model: nn.Module, device, dtype) -> nn.Module:
    """``model`` on ``device`` / in ``dtype`` (floating parameters and buffers; None: as is)."""
    if device is None and dtype is None:
        return model
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype (torch.float32, torch.bfloat16, ...), got {dtype!r}")
    return model.to(device=device, dtype=dtype)


def _keyword_hint(error: TypeError, entry) -> str:
    """``"; did you mean width_mult?"`` for a misspelt keyword (from the TypeError's message),
    matched against create_model's own keywords and the ones the model's builder takes."""
    m = re.search(r"(?:unexpected keyword argument|unknown option) '(\w+)'", str(error))
    if not m or "did you mean" in str(error):
        return ""
    own = [p for p in inspect.signature(create_model).parameters if p not in ("name", "kwargs")]
    if entry.task != "classification":  # the backbone options are refused for task models
        own = ["pretrained", "num_classes", "strict", "pretrained_cfg", "pretrained_cfg_overlay", "device", "dtype"]
    known = list(dict.fromkeys(own + list(entry.options)))
    close = difflib.get_close_matches(m.group(1), known, n=3, cutoff=0.6)
    return (f"; did you mean {' or '.join(close)}?" if close else "") + f" (options: {', '.join(known)})"


def count_params(model: nn.Module) -> int:
    """Trainable-state parameter count (BatchNorm not folded), as the papers' tables use."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def stage_shapes(model: nn.Module, input_size=(224, 224)) -> list[tuple[str, tuple[int, ...]]]:
    """Output shape of the stem and each stage for one input of ``input_size``."""
    model = model.eval()
    x = torch.zeros(1, model.in_chans, *input_size)
    return [(o.name, tuple(o.map.shape)) for o in model.stage_outputs(x)]


def model_from_checkpoint(path: str | Path, use_ema: bool = True, model_name: str | None = None,
                          num_classes: int | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model a training checkpoint describes and load its weights.

    Returns ``(model in eval mode, info)`` with info keys ``recipe`` (dict), ``classes``,
    ``epoch``, ``best``. Plain weight files (``.safetensors`` or state dicts) need
    ``model_name`` and ``num_classes``.
    """
    p = Path(path)
    if p.suffix.lower() == ".safetensors":
        ck: dict = {}
    else:
        ck = load_checkpoint(p)
    recipe = ck.get("recipe") if isinstance(ck.get("recipe"), dict) else {}
    classes = list(ck.get("classes") or [])
    name = model_name or recipe.get("model") or (ck.get("mobilenets_meta") or {}).get("arch")
    if not name:
        raise CheckpointError(f"{p}: no architecture recorded; pass the model name (--model)")
    if ck.get("state_dict") is not None and isinstance(ck["state_dict"], dict):
        sd = ck["state_dict"] if use_ema or ck.get("model") is None else ck["model"]
    else:
        sd, _ = read_checkpoint(p)
    fc = [v for k, v in sd.items() if k.endswith("head.fc.weight")]
    n = num_classes or (len(classes) if classes else (int(fc[0].shape[0]) if fc else None))
    if n is None:
        raise CheckpointError(f"{p}: cannot tell the number of classes; pass num_classes")
    # the builder options the run trained with (e.g. width_mult) shape the model: rebuild with them
    arch = recipe.get("model_kwargs") if recipe.get("model") == name else None
    model = create_model(name, num_classes=n, **(arch if isinstance(arch, dict) else {}))
    load_weights(model, sd)
    model.eval()
    saved = ck.get("model_info") if (ck.get("model_info") or {}).get("name") == model_info(model).name else None
    set_model_info(model, trained_info(model_info(model), saved, recipe if recipe.get("model") == name else None))
    info = {"recipe": recipe, "classes": classes or [str(i) for i in range(n)],
            "epoch": ck.get("epoch"), "best": ck.get("best"), "model_info": model_info(model)}
    return model, info
