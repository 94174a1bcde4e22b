"""Optional dependencies: which extra of ``pip install 'mobilenets[...]'`` brings each one, and
the one import helper every feature that needs one goes through.

The core (models, weights, analysis) needs torch, torchvision, safetensors and numpy only. A
feature that needs more imports it with :func:`require`, so a user without it gets one line
naming the feature, the missing package and the extra to install
(``pip install 'mobilenets[onnx]'``) instead of a traceback from deep inside the feature. The
command line reports that line and exits with 2 (a :class:`MissingDependencyError` is an
``ImportError``, which :func:`mobilenets.cli.common.run_handler` treats as a user error).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingDependencyError", "install_hint", "require"]

#: import name -> (the package's name on PyPI, the extra that installs it). ``dev`` holds all.
EXTRAS: dict[str, tuple[str, str]] = {
    "onnx": ("onnx", "onnx"),
    "onnxruntime": ("onnxruntime", "onnx"),
    "huggingface_hub": ("huggingface_hub", "hub"),
    "matplotlib": ("matplotlib", "plot"),
    "sklearn": ("scikit-learn", "train"),
    "tqdm": ("tqdm", "train"),
    "pycocotools": ("pycocotools", "detect"),
    "faster_coco_eval": ("faster-coco-eval", "detect"),
    "torchmetrics": ("torchmetrics", "detect"),
    "yaml": ("pyyaml", "detect"),
    "ultralytics": ("ultralytics", "yolo"),
    "executorch": ("executorch", "mobile"),
    "litert_torch": ("litert-torch", "mobile"),
    "ai_edge_litert": ("ai-edge-litert", "mobile"),
    "timm": ("timm", "dev"),
}


class MissingDependencyError(ImportError):
    """An optional package a feature needs is not installed. The message is one line: the
    feature, the package and the ``pip install`` command."""


def install_hint(module: str) -> str:
    """``pip install 'mobilenets[<extra>]'`` for an optional module (its top-level import name)."""
    package, extra = EXTRAS.get(module.split(".")[0], (module.split(".")[0], ""))
    return f"pip install 'mobilenets[{extra}]'" if extra else f"pip install {package}"


def require(module: str, feature: str) -> ModuleType:
    """Import an optional ``module`` (e.g. ``"onnxruntime"``, ``"executorch.exir"``) for ``feature``.

    Raises:
        MissingDependencyError: the module's package is not installed: ``"<feature> needs
            <package>, which is not installed: pip install 'mobilenets[<extra>]'"``. An import
            that fails *inside* an installed package (a broken or incompatible install) is not
            hidden: its own ImportError propagates, so the cause stays visible.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        root = module.split(".")[0]
        missing = (getattr(e, "name", None) or root).split(".")[0]
        if missing != root and missing not in EXTRAS:
            raise  # the package is there but something it imports is not: show the real cause
        # the package itself, or one of ours it needs (litert-torch imports ai-edge-litert)
        package = EXTRAS.get(missing, (missing, ""))[0]
        raise MissingDependencyError(f"{feature} needs {package}, which is not installed: "
                                     f"{install_hint(missing)}") from None
