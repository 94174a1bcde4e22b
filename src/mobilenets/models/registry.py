"""Model registry: name -> builder, family and spec. Raises on duplicates."""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch.nn as nn


@dataclass(frozen=True)
class ModelEntry:
    """A registered model.

    Attributes:
        name: registry name. family: ``mobilenetv1`` ... ``mobileformer``.
        builder: ``builder(**kwargs) -> nn.Module``.
        spec: the architecture spec the builder uses (when it has one).
        defaults: keyword defaults passed to the builder (e.g. ``width_mult``).
        reference: ``{"timm": name, "torchvision": name}`` of the same architecture elsewhere.
        task: ``"classification"`` (the backbones), ``"detection"`` or ``"segmentation"``
            (task models on a backbone; their builders take ``pretrained`` themselves).
    """

    name: str
    family: str
    builder: Callable[..., nn.Module]
    spec: Any = None
    defaults: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)
    task: str = "classification"


TASKS = ("classification", "detection", "segmentation")
_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, family: str, builder: Callable[..., nn.Module], spec: Any = None,
             defaults: Optional[dict] = None, reference: Optional[dict] = None,
             task: str = "classification") -> ModelEntry:
    """Register a model name. Raises ``ValueError`` if the name is taken."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered (family {_REGISTRY[name].family})")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    entry = ModelEntry(name, family, builder, spec, dict(defaults or {}), dict(reference or {}), task)
    _REGISTRY[name] = entry
    return entry


def list_models(pattern: str = "*", family: Optional[str] = None, task: Optional[str] = None) -> list[str]:
    """Sorted registered names matching a shell-style ``pattern`` (and ``family``, and ``task``:
    ``"classification"``, ``"detection"`` or ``"segmentation"``; ``None``: every task)."""
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return sorted(n for n, e in _REGISTRY.items()
                  if fnmatch.fnmatch(n, pattern) and (family is None or e.family == family)
                  and (task is None or e.task == task))


def get_entry(name: str) -> ModelEntry:
    """The entry for ``name``; an unknown name raises ``KeyError`` naming the closest matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}{hint} (see mobilenets.list_models())") from None


def is_model(name: str) -> bool:
    return name in _REGISTRY


class UnknownModelError(KeyError, ValueError):
    """Unknown model name. A ``KeyError`` (lookup) and a ``ValueError`` (bad argument)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])
