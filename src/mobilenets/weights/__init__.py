"""Checkpoint I/O and loading of our own, timm, torchvision and official Mobile-Former layouts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Union

import torch
import torch.nn as nn

from ..models.info import model_info
from .convert import LAYOUTS, adapt_shape, detect_layout, export_mobileformer_official
from .io import (WRAPPER_KEYS, CheckpointError, read_checkpoint, resolve_hf_hub, unwrap_state_dict,
                 write_checkpoint)

__all__ = ["CheckpointError", "LoadReport", "detect_layout", "export_mobileformer_official",
           "find_matching_models", "format_key_problems", "load_weights", "read_checkpoint", "resolve_hf_hub",
           "save_weights", "write_checkpoint"]

Source = Union[str, Path, Mapping[str, torch.Tensor]]


@dataclass
class LoadReport:
    """What :func:`load_weights` did: the detected layout and any keys it could not place."""

    layout: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)


def _family(model: nn.Module) -> str:
    spec = getattr(model, "spec", None)
    return getattr(spec, "family", "") or ""


def format_key_problems(missing, unexpected, mismatched, limit: int = 12) -> str:
    """The missing / unexpected / mis-shaped keys of a checkpoint that does not fit, one line each."""
    def fmt(title, items):
        if not items:
            return ""
        more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
        return f"\n  {title} ({len(items)}): " + ", ".join(items[:limit]) + more
    return fmt("missing", missing) + fmt("unexpected", unexpected) + fmt("mis-shaped", mismatched)


def _fits(sd: Mapping[str, torch.Tensor], layout: str, model: nn.Module) -> bool:
    """Whether ``sd`` (in ``layout``) maps onto ``model`` with every key and shape."""
    mapper = LAYOUTS[layout].mapper
    try:
        sd, unexpected = mapper(dict(sd), model) if mapper is not None else (dict(sd), [])
    except (AttributeError, KeyError, TypeError, ValueError, IndexError):
        return False
    target = model.state_dict()
    if unexpected or set(sd) != set(target):
        return False
    return all(adapt_shape(v, target[k].shape).shape == target[k].shape for k, v in sd.items())


def find_matching_models(sd: Mapping[str, torch.Tensor], family: str, exclude: str = "",
                         num_classes: int = 1000, in_chans: int = 3) -> list[str]:
    """Registered models of ``family`` that a state dict (any known layout) fits exactly.

    Candidates are built on the ``meta`` device (no memory, no init cost), with ``num_classes``
    (then the model's default class count, then 1000) and ``in_chans``. Used to name the variant a
    checkpoint belongs to when it does not fit the model it was loaded into.
    """
    from ..models.registry import get_entry, list_models

    layout = detect_layout(sd)
    if layout not in LAYOUTS or not family:
        return []
    found = []
    for name in list_models(family=family):
        if name == exclude:
            continue
        entry = get_entry(name)
        # the model's own default class count too (MobileNetV5-300M and its encoder have none)
        for classes in dict.fromkeys((num_classes, entry.defaults.get("num_classes", 1000), 1000)):
            try:
                with torch.device("meta"):
                    cand = entry.builder(num_classes=classes, in_chans=in_chans)
            except Exception:  # noqa: BLE001 - a candidate that cannot be built just does not match
                continue
            if _fits(sd, layout, cand):
                found.append(name)
                break
    return found


def _registered_name(model: nn.Module) -> str:
    """The registry name of a model ``create_model`` built ("" for any other module)."""
    from ..models.registry import is_model

    name = model_info(model).name
    return name if is_model(name) else ""


def _variant_hint(sd: Mapping[str, torch.Tensor], model: nn.Module) -> str:
    info = model_info(model)
    names = find_matching_models(sd, _family(model), _registered_name(model), info.num_classes, info.in_chans)
    if not names:
        return ""
    return (f"\n  it appears to be a checkpoint for {' or '.join(names)} (every key and shape fits); "
            f"create that model instead")


def _fit_hint(meta: Mapping, model: nn.Module, sd: Mapping[str, torch.Tensor], target: Mapping, missing: list,
              unexpected: list, mismatched: list) -> str:
    """The likely cause of a checkpoint that does not fit, in words, before the key lists: the
    architecture the file records (our files and training checkpoints name it), or a classifier
    of another size (``num_classes=``)."""
    name = _registered_name(model)
    arch = meta.get("arch")
    hints = []
    if arch and name and arch != name:
        hints.append(f"the checkpoint records model {arch!r}, not {name!r}: "
                     f"create_model({arch!r}, pretrained=...) loads it")
    get_classifier = getattr(model, "get_classifier", None)
    fc = get_classifier() if callable(get_classifier) else None
    prefix = next((n for n, m in model.named_modules() if m is fc and n), None)
    if prefix and not missing and not unexpected and mismatched \
            and all(k.startswith(prefix + ".") for k in (m.split(":")[0] for m in mismatched)):
        w = sd.get(prefix + ".weight")
        if w is not None and w.ndim == 2:
            n, ours = int(w.shape[0]), int(target[prefix + ".weight"].shape[0])
            hints.append(f"only the classifier differs: {n} classes in the checkpoint, {ours} in the model; "
                         f"pass num_classes={n} (or strict=False to load everything but the classifier, "
                         f"to fine-tune on {ours} classes)")
    return "".join(f"\n  {h}" for h in hints)


def _bn_from_meta(meta: Mapping, where: str) -> tuple[float, Optional[float]]:
    """The BatchNorm eps / momentum our files carry as metadata (written by :func:`save_weights`;
    momentum ``None`` is PyTorch's cumulative average). A missing, unreadable or out-of-range
    value (a damaged file) is a CheckpointError naming the file."""
    raw_eps, raw_mom = meta.get("bn_eps"), meta.get("bn_momentum")
    try:
        eps = float(raw_eps)
        mom = None if raw_mom == "None" else float(raw_mom)
    except (TypeError, ValueError):
        raise CheckpointError(f"{where}: damaged metadata: bn_eps={raw_eps!r}, bn_momentum={raw_mom!r} "
                              f"(expected numbers, as save_weights writes them)") from None
    if not (0.0 < eps < 1.0) or (mom is not None and not 0.0 <= mom <= 1.0):
        raise CheckpointError(f"{where}: damaged metadata: bn_eps={eps!r} (expected 0 < eps < 1), "
                              f"bn_momentum={mom!r} (expected None or 0..1)")
    return eps, mom


#: the registry's task of a model -> the ``recipe["task"]`` of a checkpoint trained for it
_REGISTRY_TASKS = {"classification": "classify", "detection": "detect", "segmentation": "segment"}


def check_checkpoint_task(meta: Mapping, where: str, model: nn.Module, task: Optional[str] = None) -> None:
    """Raise :class:`CheckpointError` when ``meta`` (what :func:`read_checkpoint` /
    :func:`unwrap_state_dict` found; a ``mobilenets train`` checkpoint records its task and
    model) says the checkpoint was trained for another task than ``model``'s: a detection
    checkpoint given to a classifier or a backbone, a classification one given as a detector's
    weights, ... The message names the checkpoint's model and task and where it loads instead.
    Files that record no task (plain state dicts, timm's, torchvision's) pass. ``task``: the
    model's (``classify`` / ``detect`` / ``segment``; default: its registry entry's, else
    ``classify``)."""
    from ..models.registry import get_entry

    got, want = meta.get("task"), task
    if want is None:
        try:
            want = _REGISTRY_TASKS.get(get_entry(_registered_name(model)).task, "classify")
        except (KeyError, ValueError):
            want = "classify"
    if not got or got == want:
        return
    from .io import TRAINING_TASKS as words

    arch = meta.get("arch", "?")
    name = model_info(model).name
    msg = (f"{where}: this is a {words.get(got, got)} checkpoint of {arch} (mobilenets train --task {got}), "
           f"not {words.get(want, want)} weights for {name}")
    if want == "classify":
        msg += ("; a classifier, and a detector's or segmenter's backbone (pretrained_backbone=, or "
                "--set pretrained= when training one), load a classification checkpoint (mobilenets train "
                "--task classify)")
    elif got == "classify":
        msg += (f"; a classification checkpoint initialises the backbone: pretrained_backbone='{where}' "
                f"(training: --set pretrained={where})")
    else:
        msg += (f"; {name} loads a {words.get(want, want)} checkpoint (mobilenets train --task {want}), its "
                f"backbone a classification one (pretrained_backbone=)")
    if got != "classify":
        n = f", num_classes={meta['num_classes']}" if meta.get("num_classes") else ""
        msg += (f". This checkpoint loads whole: mobilenets.create_model('{arch}'{n}, pretrained='{where}'), "
                f"or mobilenets eval / predict / export {where}")
    raise CheckpointError(msg)


def load_weights(model: nn.Module, source: Source, strict: bool = True) -> LoadReport:
    """Load a checkpoint into ``model``, in place.

    Args:
        model: a model built by :func:`mobilenets.create_model`.
        source: a path (``.pth/.pt/.bin/.ckpt``: read with ``weights_only=True``;
            ``.safetensors``), ``"hf-hub:org/name"``, or a state dict (also wrapped, as
            training scripts save it: ``{"state_dict": ...}``, ``{"model": ...}``). The key layout (ours,
            timm's, torchvision's or the official Mobile-Former code's, for the same
            architecture) is detected from the keys.
        strict: raise if any key is missing, unexpected or mis-shaped (default). With
            ``strict=False`` those keys are skipped (e.g. a classifier with another class
            count) and listed in the returned report.

    Raises:
        CheckpointError: unreadable file, unknown layout, or (strict) keys that do not fit,
            listing the missing, unexpected and mis-shaped keys and naming the registered
            model of the same family the checkpoint does fit, if any.
    """
    meta: dict = {}
    if isinstance(source, Mapping):
        sd = dict(source)
        where = "state dict"
        wrapped = next((sd[k] for k in WRAPPER_KEYS if isinstance(sd.get(k), Mapping)), None)
        if wrapped is not None and not all(isinstance(v, torch.Tensor) for v in sd.values()):
            sd, meta = unwrap_state_dict(sd, where)  # {"state_dict": ...}, as files are unwrapped
    else:
        src = str(source)
        path = resolve_hf_hub(src) if src.startswith(("hf-hub:", "hf_hub:")) else Path(src)
        sd, meta = read_checkpoint(path)
        where = src
    check_checkpoint_task(meta, where, model)
    if not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{where}: expected a non-empty mapping of names to tensors")
    layout = detect_layout(sd)
    if layout not in LAYOUTS:
        raise CheckpointError(
            f"{where}: {'ambiguous' if layout == 'ambiguous' else 'unrecognised'} key layout "
            f"(first keys: {list(sd)[:5]}); expected a mobilenets, timm, torchvision, official "
            f"Mobile-Former or Gemma 3n (vision tower) checkpoint of the same architecture")
    mapper, bn_settings = LAYOUTS[layout].mapper, LAYOUTS[layout].bn_settings
    raw = sd
    unexpected: list[str] = []
    if mapper is not None:
        try:
            sd, unexpected = mapper(sd, model)
        except (AttributeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{where}: a {layout} checkpoint cannot be mapped onto "
                                  f"{type(model).__name__} ({e})" + _variant_hint(raw, model)) from None
    target = model.state_dict()
    missing = [k for k in target if k not in sd]
    unexpected += [k for k in sd if k not in target]
    fitted, mismatched = {}, []
    for k, v in sd.items():
        if k not in target:
            continue
        v = adapt_shape(v, target[k].shape)
        if v.shape != target[k].shape:
            mismatched.append(f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}")
        elif v.is_floating_point() != target[k].is_floating_point() or v.is_complex():
            # fp16/bf16 -> fp32 is a legitimate cast; integers into weights (or floats into
            # counters) are a broken file, which load_state_dict would cast silently
            mismatched.append(f"{k}: checkpoint dtype {v.dtype} vs model {target[k].dtype}")
        else:
            fitted[k] = v
    if strict and (missing or unexpected or mismatched):
        raise CheckpointError(
            f"{where} ({layout} layout) does not fit {model_info(model).name}:"
            + _fit_hint(meta, model, sd, target, missing, unexpected, mismatched)
            + format_key_problems(missing, unexpected, mismatched) + _variant_hint(raw, model))
    model.load_state_dict(fitted, strict=False)
    eps, mom = bn_settings(_family(model))
    if getattr(getattr(model, "spec", None), "fixed_norm", False):
        eps, mom = None, None  # the architecture fixes them (TF ports): whoever saved it trained with them
    if layout == "mobilenets" and "bn_eps" in meta:
        eps, mom = _bn_from_meta(meta, where)
    if eps is not None and hasattr(model, "set_bn"):
        model.set_bn(eps, mom)
    return LoadReport(layout, len(fitted), missing, unexpected, mismatched)


def save_weights(model: nn.Module, path: Union[str, Path]) -> Path:
    """Save ``model``'s weights in our layout (``.safetensors`` or ``.pth`` by suffix),
    atomically, with the BatchNorm settings and architecture name as metadata."""
    meta = {"format": "mobilenets", "arch": model_info(model).name}
    bn = next((m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)), None)
    if bn is not None:
        meta.update(bn_eps=repr(bn.eps), bn_momentum=repr(bn.momentum))
    return write_checkpoint(model.state_dict(), path, meta)
