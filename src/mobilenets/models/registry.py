"""Model registry: name -> builder, family and spec. Raises on duplicates."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import warnings
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
        options: the keyword options ``create_model`` passes on to the builder (what a misspelt
            keyword is matched against).
    """

    name: str
    family: str
    builder: Callable[..., nn.Module]
    spec: Any = None
    defaults: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)
    task: str = "classification"
    options: tuple[str, ...] = ()


def keyword_options(*fns: Callable) -> tuple[str, ...]:
    """The named keyword parameters of callables (a class: its ``__init__``), in order, without
    ``self``, a leading spec / backbone argument and ``*args`` / ``**kwargs``."""
    names: list[str] = []
    for fn in fns:
        for p in list(inspect.signature(fn).parameters.values()):
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in ("self", "spec", "backbone"):
                continue
            if p.name not in names:
                names.append(p.name)
    return tuple(names)


TASKS = ("classification", "detection", "segmentation")
_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, family: str, builder: Callable[..., nn.Module], spec: Any = None,
             defaults: Optional[dict] = None, reference: Optional[dict] = None,
             task: str = "classification", options: tuple[str, ...] = ()) -> ModelEntry:
    """Register a model name. Raises ``ValueError`` if the name is taken. ``options``: the
    keywords the builder accepts besides its named parameters (when it forwards ``**kwargs``)."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered (family {_REGISTRY[name].family})")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    entry = ModelEntry(name, family, builder, spec, dict(defaults or {}), dict(reference or {}), task,
                       tuple(dict.fromkeys(keyword_options(builder) + tuple(options))))
    _REGISTRY[name] = entry
    return entry


def list_models(pattern: str = "*", family: Optional[str] = None, task: Optional[str] = None) -> list[str]:
    """Sorted registered names matching a shell-style ``pattern`` (and ``family``, and ``task``:
    ``"classification"``, ``"detection"`` or ``"segmentation"``; ``None``: every task).

    No match returns ``[]`` (as timm does) with a warning naming the families there are, so a
    pattern for another library's models (``"resnet*"``) or a misspelt family is not silent."""
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    found = sorted(n for n, e in _REGISTRY.items()
                   if fnmatch.fnmatch(n, pattern) and (family is None or e.family == family)
                   and (task is None or e.task == task))
    if not found and _REGISTRY:
        families = sorted({e.family for e in _REGISTRY.values() if task is None or e.task == task})
        warnings.warn(f"no model matches {pattern!r}" + (f" in family {family!r}" if family else "")
                      + (f" for task {task!r}" if task else "") + f"; the families are {', '.join(families)}",
                      stacklevel=2)
    return found


def get_entry(name: str) -> ModelEntry:
    """The entry for ``name``; an unknown name raises ``KeyError`` naming the closest matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=40, cutoff=0.5)
        # suggest models of the task the closest match has: a misspelt classifier name gets
        # classifiers, not the segmenters and detectors built on that classifier
        close = [n for n in close if _REGISTRY[n].task == _REGISTRY[close[0]].task][:5] if close else []
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}{hint} (see mobilenets.list_models())") from None


def is_model(name: str) -> bool:
    return name in _REGISTRY


class UnknownModelError(KeyError, ValueError):
    """Unknown model name. A ``KeyError`` (lookup) and a ``ValueError`` (bad argument)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])
