"""A trained task model (detector, segmenter) back from its training checkpoint: which task a
checkpoint is, and the model rebuilt from the run's recipe (the backbone checkpoint the run
started from is not needed: the builder options that shaped the model are in the recipe); and
the image reading and writing their ``predict`` shares."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

import torch.nn as nn

from ..models.info import model_info, set_model_info, trained_info
from ..weights import CheckpointError
from ..weights.checkpoint import load_checkpoint

PathLike = Union[str, Path]


def checkpoint_task(path: PathLike) -> Optional[str]:
    """The ``recipe.task`` of a training checkpoint (``"classify"``, ``"detect"``,
    ``"segment"``), or ``None`` for a file that is not a training checkpoint."""
    try:
        ck = load_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a training checkpoint: not ours to handle
        return None
    recipe = ck.get("recipe")
    return recipe.get("task", "classify") if isinstance(recipe, dict) else None


def load_task_checkpoint(path: PathLike, task: str, architecture: Callable, load: Callable,
                         use_ema: bool = True) -> tuple[nn.Module, dict]:
    """``(model in eval mode, info)`` from a ``mobilenets train --task <task>`` checkpoint.

    Args:
        path: ``best.pt`` / ``last.pt``.
        task: the task the checkpoint must be (``CheckpointError`` otherwise).
        architecture: ``recipe -> builder options`` that shape the model.
        load: ``(model, state dict)`` -> loads the weights, every key checked.
        use_ema: the deployable (EMA) weights when the run kept an EMA, else the raw ones.

    Returns:
        ``info``: ``recipe`` (a :class:`~mobilenets.train.recipe.Recipe`), ``classes``
        (background first), ``epoch``, ``best``.
    """
    from ..factory import create_model
    from ..train.recipe import Recipe

    ck = load_checkpoint(path)
    if not isinstance(ck.get("recipe"), dict) or ck["recipe"].get("task") != task:
        raise CheckpointError(f"{path}: not a {task} training checkpoint (no recipe with task {task!r})")
    recipe = Recipe.from_dict(ck["recipe"])
    classes = list(ck.get("classes") or [])
    sd = ck["state_dict"] if use_ema or ck.get("model") is None else ck["model"]
    model = create_model(recipe.model, num_classes=len(classes), **architecture(recipe))
    load(model, sd)
    info = trained_info(model_info(model), ck.get("model_info"), ck["recipe"])
    set_model_info(model, info)
    return model.eval(), {"recipe": recipe, "classes": classes, "epoch": ck.get("epoch"), "best": ck.get("best"),
                          "model_info": info}


def read_image(path: PathLike):
    """A uint8 ``(3, H, W)`` RGB image; ``ValueError`` naming the file when it cannot be read."""
    from ..data import read_rgb

    try:
        return read_rgb(Path(path))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the image ({e})") from None


def save_drawn(image, source: PathLike, out_dir: Optional[PathLike], suffix: str) -> Path:
    """Write a drawn prediction (a PIL image, or a uint8 ``(3, H, W)`` tensor) atomically as
    ``<out_dir or the source's folder>/<source stem>_<suffix>.png``; the path."""
    from ..weights.io import atomic_write

    if not hasattr(image, "save"):
        from torchvision.transforms.v2.functional import to_pil_image
        image = to_pil_image(image)
    src = Path(source)
    dest = Path(out_dir or src.parent) / f"{src.stem}_{suffix}.png"
    dest.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(dest, lambda tmp: image.save(tmp, format="PNG"))


def model_from_checkpoint(path: PathLike, use_ema: bool = True) -> tuple[nn.Module, dict]:
    """The model a ``mobilenets train`` checkpoint (``best.pt`` / ``last.pt``) holds, for any
    task, rebuilt from the architecture options the run recorded, weights loaded, in eval mode.

    ``mobilenets.model_from_checkpoint`` is this. A plain weights file (ours, timm's,
    torchvision's) records no architecture: use ``mobilenets.create_model(name, pretrained=path)``.

    Args:
        path: the checkpoint.
        use_ema: the deployable weights (the EMA when the run kept one), else the raw ones.

    Returns:
        ``(model, info)``; ``info``: ``task`` (``classify`` / ``detect`` / ``segment``), ``model``
        (its registry name), ``recipe`` (the run's recipe, a dict), ``classes`` (detection and
        segmentation: background first), ``epoch``, ``best``.

    Raises:
        FileNotFoundError: no such file. CheckpointError: not a training checkpoint (what it is
            instead, when that can be told), or weights that do not fit.
    """
    task = checkpoint_task(path)
    if task is None:
        load_checkpoint(path)  # a file that cannot be read says why
        raise CheckpointError(f"{path}: not a mobilenets training checkpoint (it records no recipe); for a "
                              f"plain weights file use mobilenets.create_model(name, pretrained={str(path)!r})")
    from ..train.task import get_task

    model, info = get_task(task).load(path, use_ema=use_ema)
    recipe = info["recipe"] if isinstance(info["recipe"], dict) else info["recipe"].to_dict()
    return model, {**info, "task": task, "model": recipe.get("model"), "recipe": recipe}
