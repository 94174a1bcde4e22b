"""timm's data-config API on our models: :func:`resolve_data_config` and :func:`create_transform`.

``resolve_data_config`` gives the dict timm's ``timm.data.resolve_data_config`` gives (same
keys, same precedence: ``args``, then the ``pretrained_cfg``, then the model's
``pretrained_cfg``, then timm's defaults), and ``create_transform(**config)`` the transform of
timm's evaluation path (``timm.data.create_transform(..., is_training=False)``), so code written
for timm runs unchanged on our models::

    config = resolve_data_config({}, model=model)
    transform = create_transform(**config)

A module without a ``pretrained_cfg`` (one ``create_model`` did not build) is read through its
:class:`~mobilenets.models.info.ModelInfo` (:func:`~mobilenets.models.info.model_info`) instead
of falling back to timm's defaults.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch.nn as nn

from ..models.info import CFG_FIELDS, IMAGENET_CROP_PCT, IMAGENET_MEAN, IMAGENET_STD, model_info
from .common import eval_transform

# timm's defaults (timm.data.constants): what a config falls back to when nothing says otherwise
DEFAULT_INTERPOLATION = "bicubic"
DEFAULT_CROP_MODE = "center"


def resolve_data_config(args: Optional[Mapping[str, Any]] = None,
                        pretrained_cfg: Optional[Mapping[str, Any]] = None,
                        model: Optional[nn.Module] = None, use_test_size: bool = False,
                        verbose: bool = False) -> dict:
    """The evaluation data config of a model: ``input_size``, ``interpolation``, ``mean``,
    ``std``, ``crop_pct``, ``crop_mode`` (timm's ``resolve_data_config``, argument order too).

    Args:
        args: overrides (``input_size`` or ``img_size`` / ``in_chans``, ``interpolation``,
            ``mean``, ``std`` (one value: for every channel), ``crop_pct``, ``crop_mode``).
        pretrained_cfg: the cfg to read (default: ``model.pretrained_cfg``, else the model's
            :class:`~mobilenets.models.info.ModelInfo`).
        model: the model.
        use_test_size: the cfg's ``test_input_size`` / ``test_crop_pct`` where it has them.
        verbose: print the config.

    Raises:
        ValueError: none of ``args``, ``pretrained_cfg``, ``model`` given; a malformed override.
    """
    if not (model is not None or args or pretrained_cfg):
        raise ValueError("resolve_data_config needs a model, args or a pretrained_cfg, got none")
    args = dict(args or {})
    cfg = dict(pretrained_cfg or {})
    if not cfg and model is not None:
        cfg = dict(getattr(model, "pretrained_cfg", None) or {})
        if not cfg:
            info = model_info(model)
            cfg = {k: getattr(info, k) for k in CFG_FIELDS}
    config: dict = {}

    in_chans = 3
    if args.get("in_chans") is not None:
        in_chans = int(args["in_chans"])
    elif args.get("chans") is not None:
        in_chans = int(args["chans"])
    if args.get("input_size") is not None:
        size = tuple(args["input_size"])
        if len(size) != 3:
            raise ValueError(f"args['input_size'] must be (C, H, W), got {args['input_size']}")
        in_chans = size[0]
    elif args.get("img_size") is not None:
        if not isinstance(args["img_size"], int):
            raise ValueError(f"args['img_size'] must be an int, got {args['img_size']!r}")
        size = (in_chans, args["img_size"], args["img_size"])
    elif use_test_size and cfg.get("test_input_size") is not None:
        size = tuple(cfg["test_input_size"])
    else:
        size = tuple(cfg["input_size"]) if cfg.get("input_size") is not None else (in_chans, 224, 224)
    config["input_size"] = size
    config["interpolation"] = args.get("interpolation") or cfg.get("interpolation") or DEFAULT_INTERPOLATION
    for key, default in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
        if args.get(key) is not None:
            v = tuple(args[key])
            if len(v) == 1:
                v = v * in_chans
            elif len(v) != in_chans:
                raise ValueError(f"args[{key!r}] needs 1 or {in_chans} values (one per channel), got {len(v)}")
            config[key] = v
        else:
            config[key] = tuple(cfg[key]) if cfg.get(key) else default
    if args.get("crop_pct"):
        crop_pct = args["crop_pct"]
    elif use_test_size and cfg.get("test_crop_pct"):
        crop_pct = cfg["test_crop_pct"]
    else:
        crop_pct = cfg.get("crop_pct") or IMAGENET_CROP_PCT
    config["crop_pct"] = crop_pct
    config["crop_mode"] = args.get("crop_mode") or cfg.get("crop_mode") or DEFAULT_CROP_MODE
    if verbose:
        print("data config:", ", ".join(f"{k}={v}" for k, v in config.items()))
    return config


def resolve_model_data_config(model: nn.Module, args: Optional[Mapping[str, Any]] = None,
                              pretrained_cfg: Optional[Mapping[str, Any]] = None, use_test_size: bool = False,
                              verbose: bool = False) -> dict:
    """:func:`resolve_data_config` with the model first (timm's ``resolve_model_data_config``)."""
    return resolve_data_config(args, pretrained_cfg, model, use_test_size, verbose)


def create_transform(input_size: Union[int, Sequence[int]] = 224, is_training: bool = False,
                     interpolation: str = "bilinear", mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD, crop_pct: Optional[float] = None,
                     crop_mode: Optional[str] = None) -> Callable:
    """timm's ``create_transform`` for evaluation (its defaults too): :func:`eval_transform` at
    ``input_size`` (``(C, H, W)``, ``(H, W)`` or one int), ``crop_pct`` (default 0.875),
    ``crop_mode`` (default ``"center"``). Takes what :func:`resolve_data_config` returns.

    Raises:
        ValueError: ``is_training=True`` (the training transforms are the recipe's:
            :func:`mobilenets.data.classification.train_transform`).
    """
    if is_training:
        raise ValueError("create_transform builds the evaluation transform (is_training=False); training "
                         "transforms come from a Recipe: mobilenets.data.classification.train_transform(recipe)")
    size = input_size if isinstance(input_size, int) else tuple(input_size)[-2:]
    return eval_transform(size, crop_pct or IMAGENET_CROP_PCT, mean, std, interpolation,
                          crop_mode or DEFAULT_CROP_MODE)
