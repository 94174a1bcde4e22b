"""Task-model checkpoints (detectors, segmenters) -> our models: reading any source, mapping a
torchvision layout's backbone keys onto our backbone, and the strict key check. Each task says
only how torchvision lays out its backbone (:mod:`.detection.convert`, :mod:`.segmentation.convert`).

The necks and heads are torchvision's modules, so their keys are torchvision's already. A
torchvision task backbone is its classification ``features`` under another prefix; those keys
are put back into the classification layout and mapped onto our backbone by
:mod:`mobilenets.weights.convert`'s torchvision layout, every key and shape checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import torch
import torch.nn as nn

from ..models.info import model_info
from ..weights import (CheckpointError, check_checkpoint_task, format_key_problems, read_checkpoint, resolve_hf_hub,
                       unwrap_state_dict)
from ..weights.convert import LAYOUTS

Source = Union[str, Path, Mapping[str, torch.Tensor]]
#: ``split(state dict) -> (classification-layout backbone keys, the other keys)``, or None when the
#: state dict is not in that torchvision layout
BackboneSplit = Callable[[dict], Optional[tuple[dict, dict]]]


def read_state_dict(source: Source, model: Optional[nn.Module] = None, task: Optional[str] = None) -> tuple[dict, str]:
    """``(state dict, where)`` from a path (``.pth``, ``.safetensors``, a training checkpoint),
    ``hf-hub:org/name`` or a state dict (a wrapper such as a training checkpoint is unwrapped).
    With ``model`` (of ``task``: ``detect`` / ``segment``): a training checkpoint of another task is a
    :class:`CheckpointError` saying what it is (:func:`mobilenets.weights.check_checkpoint_task`)."""
    meta: dict = {}
    if isinstance(source, Mapping):
        sd, where = dict(source), "state dict"
        if not all(isinstance(v, torch.Tensor) for v in sd.values()):
            sd, meta = unwrap_state_dict(sd, where)
    else:
        where = str(source)
        path = resolve_hf_hub(where) if where.startswith(("hf-hub:", "hf_hub:")) else Path(where)
        sd, meta = read_checkpoint(path)
    if model is not None:
        check_checkpoint_task(meta, where, model, task)
    return sd, where


def map_torchvision_backbone(backbone_sd: dict, rest: dict, body: nn.Module, prefix: str,
                             target: Mapping[str, torch.Tensor]) -> dict:
    """Our task model's keys from a torchvision layout: ``backbone_sd`` (classification
    ``features.i...`` keys) mapped onto ``body`` under ``prefix``, plus ``rest`` (neck / heads).
    Keys that do not map stay under their torchvision names (the strict check lists them);
    ``num_batches_tracked`` our model lacks (FrozenBatchNorm2d) is dropped, as torchvision does."""
    mapped, unmapped = LAYOUTS["torchvision"].mapper(backbone_sd, body)
    out = {prefix + k: v for k, v in mapped.items()}
    out.update({f"backbone.features.{k}": backbone_sd[k] for k in unmapped})
    out.update(rest)
    return {k: v for k, v in out.items() if k in target or not k.endswith("num_batches_tracked")}


def load_task_weights(model: nn.Module, source: Any, split: BackboneSplit, body: nn.Module, prefix: str,
                      strict: bool = True, hint: str = "", task: Optional[str] = None) -> dict:
    """Load a task checkpoint (ours, or torchvision's layout as ``split`` recognises it) into
    ``model`` in place.

    Args:
        model: the task model. source: see :func:`read_state_dict`.
        split: recognises torchvision's layout and splits off its backbone keys.
        body: our backbone inside ``model``, at ``prefix`` (e.g. ``"backbone.body."``).
        strict: raise if any key is missing, unexpected or mis-shaped.
        hint: a line appended to the error (which builder options shape the checkpoint).
        task: the model's task (``detect`` / ``segment``): a training checkpoint of another task is
            refused, naming what it is.

    Returns:
        ``{"layout", "missing", "unexpected", "mismatched"}``.

    Raises:
        CheckpointError: the file does not fit, listing the keys.
    """
    sd, where = read_state_dict(source, model, task)
    target = model.state_dict()
    parts = split(sd)
    layout = "mobilenets" if parts is None else "torchvision"
    if parts is not None:
        sd = map_torchvision_backbone(*parts, body, prefix, target)
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
                  for k, v in sd.items() if k in target and v.shape != target[k].shape]
    if strict and (missing or unexpected or mismatched):
        raise CheckpointError(f"{where} ({layout} layout) does not fit {model_info(model).name}:"
                              + format_key_problems(missing, unexpected, mismatched)
                              + (f"\n  ({hint})" if hint else ""))
    bad = {m.split(":")[0] for m in mismatched}
    model.load_state_dict({k: v for k, v in sd.items() if k in target and k not in bad}, strict=False)
    return {"layout": layout, "missing": missing, "unexpected": unexpected, "mismatched": mismatched}
