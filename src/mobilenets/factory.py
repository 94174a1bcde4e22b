"""``create_model``: registry name -> model, with weights and feature extraction."""

from __future__ import annotations

import difflib
import inspect
import re
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from .models.features import FeatureExtractor
from .models.info import ModelInfo, model_info, set_model_info, trained_info
from .models.registry import get_entry
from .weights import load_weights, read_checkpoint
from .weights.checkpoint import CheckpointError, load_checkpoint

Pretrained = Union[None, bool, str, Path, dict]


def create_model(name: str, pretrained: Pretrained = None, num_classes: Optional[int] = None,
                 in_chans: int = 3, features_only: bool = False,
                 out_indices: Optional[Sequence[int]] = None, feature_location: str = "",
                 strict: bool = True, **kwargs) -> nn.Module:
    """Build a registered model.

    Args:
        name: registry name (see :func:`mobilenets.list_models`).
        pretrained: ``None``/``False`` for random init, or a checkpoint: a path
            (``.pth/.pt/.bin/.safetensors``), ``"hf-hub:org/name"`` or a state dict, in our,
            timm's, torchvision's or the official Mobile-Former layout. No weights are
            downloaded implicitly.
        num_classes: classifier outputs (0: none; default 1000, or the model's own: 0 for
            mobilenetv5_300m and its encoder, as timm). For detectors: classes
            including the background, as torchvision counts them (default 91, COCO).
        in_chans: input channels.
        features_only: return a :class:`FeatureExtractor` giving one map per feature level.
        out_indices: the feature levels to return (default: all).
        feature_location: with ``features_only``: ``""`` (each level's output) or
            ``"expansion"`` (the expanded map inside each level's last block; see
            :class:`FeatureExtractor`).
        strict: passed to :func:`mobilenets.load_weights`.
        **kwargs: model options: ``width_mult``, ``drop_rate``, ``drop_path_rate``,
            ``output_stride``, and family options (V3: ``reduced_tail``, ``dilated``). Task
            models (``ssdlite320_*``, ``fasterrcnn_*``, ``retinanet_*``) take their own options,
            e.g. ``pretrained_backbone=``, ``trainable_backbone_layers=`` (see
            :mod:`mobilenets.tasks.detection`).

    Raises:
        KeyError/ValueError: unknown name (with the closest matches) or bad options.
    """
    entry = get_entry(name)
    if pretrained is True:
        raise ValueError(
            f"pretrained=True: mobilenets downloads nothing implicitly; pass a checkpoint path or "
            f"'hf-hub:org/name' (e.g. a timm repo for {entry.reference.get('timm', name)})")
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
        return set_model_info(model, model_info(model).replace(name=name, task=entry.task, family=entry.family))
    if num_classes is None:  # the model's own default (an encoder has no classifier), else 1000
        num_classes = entry.defaults.get("num_classes", 1000)
    try:
        model = entry.builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as e:
        raise TypeError(f"{name}: {e}{_keyword_hint(e, entry)}") from None
    info = ModelInfo(name=name, family=entry.family, num_classes=num_classes).replace(in_chans=in_chans)
    set_model_info(model, info)
    if pretrained is not None and pretrained is not False:
        load_weights(model, pretrained, strict=strict)
    if features_only:
        model = set_model_info(FeatureExtractor(model, out_indices, feature_location), info)
    elif out_indices is not None or feature_location:
        raise ValueError(f"out_indices and feature_location are only used with features_only=True, "
                         f"got out_indices={out_indices}, feature_location={feature_location!r}")
    return model


def _keyword_hint(error: TypeError, entry) -> str:
    """``"; did you mean width_mult?"`` for a misspelt keyword (from the TypeError's message),
    matched against create_model's own keywords and the ones the model's builder takes."""
    m = re.search(r"(?:unexpected keyword argument|unknown option) '(\w+)'", str(error))
    if not m or "did you mean" in str(error):
        return ""
    own = [p for p in inspect.signature(create_model).parameters if p not in ("name", "kwargs")]
    if entry.task != "classification":  # the backbone options are refused for task models
        own = ["pretrained", "num_classes", "strict"]
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
    saved = ck.get("model_info") if (ck.get("model_info") or {}).get("name") == name else None
    set_model_info(model, trained_info(model_info(model), saved, recipe if recipe.get("model") == name else None))
    info = {"recipe": recipe, "classes": classes or [str(i) for i in range(n)],
            "epoch": ck.get("epoch"), "best": ck.get("best"), "model_info": model_info(model)}
    return model, info
