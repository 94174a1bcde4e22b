"""The training tasks the engine knows: one registry of :class:`mobilenets.tasks.base.Task`
classes, found by either spelling (the recipe's ``classify`` / ``detect`` / ``segment``, or
the model registry's ``classification`` / ``detection`` / ``segmentation``).

Each task registers itself when its module is imported (``mobilenets.tasks`` imports them all,
and importing any part of the package imports ``mobilenets`` first), so the engine never
imports a task by name.
"""

from __future__ import annotations

from typing import Any, Callable

_TASKS: dict[str, Callable[[], Any]] = {}


def register_task(name: str, factory: Callable[[], Any]) -> None:
    """Make ``recipe.task = name`` train with ``factory()`` (raises if the name is taken)."""
    if name in _TASKS and _TASKS[name] is not factory:
        raise ValueError(f"training task {name!r} is already registered")
    _TASKS[name] = factory


def task_names() -> list[str]:
    """The registered tasks' recipe spellings, in registration order."""
    return list(_TASKS)


def canonical_task(name: str) -> str:
    """The recipe spelling of ``name`` (either spelling); ``ValueError`` listing the known ones."""
    if name in _TASKS:
        return name
    for key, factory in _TASKS.items():
        if getattr(factory, "models", None) == name:
            return key
    known = sorted(_TASKS) + sorted(getattr(f, "models", "") for f in _TASKS.values())
    raise ValueError(f"unknown training task {name!r}; choose from {sorted(_TASKS)} (or {known[len(_TASKS):]})")


def get_task(name: str):
    """A fresh task object for ``recipe.task`` (or the models' task name); ``ValueError``
    listing the known tasks."""
    return _TASKS[canonical_task(name)]()
