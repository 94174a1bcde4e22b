"""How Ultralytics' YAML parser learns our module names, with its source left as it is.

``ultralytics.nn.tasks.parse_model`` resolves a row's module name as ``globals()[name]`` of
``ultralytics.nn.tasks`` (``nn.*`` and ``torchvision.ops.*`` aside), and sizes the next layer
from the output channels it knows for its own module classes only (a custom module is assumed to
keep its input channels). So :func:`register`:

1. adds :data:`~.backbone.MODULES` (``MobileNetBackbone`` and the tutorial's names) to that
   namespace, and
2. puts a pre-pass in front of ``parse_model`` (the module attribute ``DetectionModel`` calls,
   wrapped, never edited): a one-row backbone at layer 0 (the tutorial layout, where that row
   "stands for layers 0-4") becomes the row plus four ``Index`` rows, ``[0, 1, Index, [c, i]]``,
   one per map P2..P5 with its channel count from ``width_list``. Those are Ultralytics' own
   module for picking one output of a list-returning layer (its ``TorchVision`` split uses it),
   so layers 1-4 are P2..P5, ``SPPF`` is layer 5 and every index in the head means what the
   tutorial means. A YAML that already has the ``Index`` rows is passed through unchanged. When
   the input has other than 3 channels, the pre-pass also hands ``in_chans`` to the backbone.

The YAML stored on the model (``model.yaml``) stays the user's, so Ultralytics' trainer, which
rebuilds the model from it, goes through the same pre-pass.
"""

from __future__ import annotations

import functools
import sys

from .backbone import AFTER_UNPICKLE, MODULES, row_args, row_channels

#: the first Ultralytics release with the ``Index`` module the pre-pass relies on
MIN_VERSION = "8.3.64"
#: what the hook needs to find in ``ultralytics.nn.tasks``
REQUIRED = ("parse_model", "DetectionModel", "Index", "Concat", "SPPF", "C2PSA", "C3k2", "Detect")
INSTALL = "pip install 'mobilenets[yolo]'"


def ultralytics_tasks():
    """``ultralytics.nn.tasks``, checked to have what the hook needs.

    Raises:
        ImportError: Ultralytics is not installed (it is an optional extra: AGPL-3.0), or is too
            old for the hook (no ``Index`` module, no YOLO11 blocks), with the pip command.
    """
    try:
        import ultralytics
        from ultralytics.nn import tasks
    except ImportError as e:
        raise ImportError(f"mobilenets.integrations.ultralytics needs Ultralytics, an optional extra "
                          f"(AGPL-3.0, never imported by the core package): {INSTALL} "
                          f"(import failed: {e})") from e
    missing = [n for n in REQUIRED if not hasattr(tasks, n)]
    if missing:
        raise ImportError(f"Ultralytics {getattr(ultralytics, '__version__', '?')} is too old for the "
                          f"mobilenets YAML hook: ultralytics.nn.tasks has no {', '.join(missing)} (YOLO11 "
                          f"and the Index module: Ultralytics >= {MIN_VERSION}); "
                          f"pip install -U 'mobilenets[yolo]'")
    return tasks


def expand_layout(d: dict, ch: int = 3) -> dict:
    """The tutorial layout's one-row backbone as the row plus its four ``Index`` rows (see the
    module docstring); any other YAML dict is returned unchanged. ``d`` is modified in place
    (``parse_model`` receives a deep copy of ``model.yaml``)."""
    rows = d.get("backbone") or []
    if not rows or not isinstance(rows[0], (list, tuple)) or len(rows[0]) != 4 or rows[0][2] not in MODULES:
        return d
    f, n, module, args = rows[0]
    if f != -1 or n != 1:
        raise ValueError(f"the backbone row {list(rows[0])} must read the input once: [-1, 1, {module}, [...]]")
    args = row_args(module, list(args or []), ch)
    rows = [[f, n, module, args]] + [list(r) for r in rows[1:]]
    has_index = len(rows) > 1 and rows[1][2] == "Index" and rows[1][0] == 0
    if not has_index:
        channels = row_channels(module, args)
        rows[1:1] = [[0, 1, "Index", [c, i]] for i, c in enumerate(channels)]
    d["backbone"] = rows
    return d


def _install(tasks) -> None:
    original = tasks.parse_model
    if getattr(original, "_mobilenets_hook", False):
        return

    @functools.wraps(original)
    def parse_model(d, ch, verbose=True):
        return original(expand_layout(d, ch), ch, verbose)

    parse_model._mobilenets_hook = True
    tasks.parse_model = parse_model


def register() -> None:
    """Make ``MobileNetBackbone`` (and the tutorial's ``MobileNetV4ConvSmall`` ...
    ``MobileNetV4HybridLarge``) known to Ultralytics' YAML parser, in this process; idempotent.

    Raises:
        ImportError: Ultralytics missing or too old (see :func:`ultralytics_tasks`).
    """
    tasks = ultralytics_tasks()
    for name, cls in MODULES.items():
        setattr(tasks, name, cls)
    _install(tasks)


def unregister() -> None:
    """Undo :func:`register` (for tests): remove the names and the pre-pass."""
    tasks = sys.modules.get("ultralytics.nn.tasks")
    if tasks is None:
        return
    for name, cls in MODULES.items():
        if getattr(tasks, name, None) is cls:
            delattr(tasks, name)
    while getattr(tasks.parse_model, "_mobilenets_hook", False):
        tasks.parse_model = tasks.parse_model.__wrapped__


def register_if_installed() -> bool:
    """:func:`register` when Ultralytics is installed (importing it), else nothing: what hands out
    our YAML files does it, so ``ultralytics.YOLO(<that file>)`` builds without the user calling
    :func:`register` first (Ultralytics' own message would be a bare ``KeyError:
    'MobileNetBackbone'``). Whether it registered; too old an Ultralytics raises as register does."""
    try:
        import ultralytics.nn.tasks  # noqa: F401
    except ImportError:
        return False
    register()
    return True


def register_if_imported() -> None:
    """:func:`register` when Ultralytics is already imported (unpickling a YOLO checkpoint),
    else nothing: unpickling our module alone must not import Ultralytics."""
    if "ultralytics.nn.tasks" in sys.modules:
        register()


if register_if_imported not in AFTER_UNPICKLE:
    AFTER_UNPICKLE.append(register_if_imported)


def is_registered() -> bool:
    tasks = sys.modules.get("ultralytics.nn.tasks")
    return tasks is not None and getattr(tasks.parse_model, "_mobilenets_hook", False) and all(
        getattr(tasks, n, None) is c for n, c in MODULES.items())


__all__ = ["MIN_VERSION", "expand_layout", "is_registered", "register", "register_if_imported", "register_if_installed",
           "ultralytics_tasks", "unregister"]
