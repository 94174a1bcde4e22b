"""Reading the training checkpoints :mod:`mobilenets.train` writes (layout in
:mod:`mobilenets.train.checkpoint`): here, not in the training package, because deployment
(``mobilenets export``) and evaluation read them too. Building the model a checkpoint describes
is :func:`mobilenets.factory.model_from_checkpoint`."""

from __future__ import annotations

from pathlib import Path

import pickle

import torch

from .io import CheckpointError, _check_torch_file, refused_object


def load_checkpoint(path: str | Path) -> dict:
    """Read a training checkpoint with ``weights_only=True`` (no arbitrary unpickling)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    _check_torch_file(p)
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{p}: refusing to unpickle objects other than tensors and plain "
                              f"containers (nothing in it was run): {refused_object(str(e))}") from None
    except Exception as e:  # noqa: BLE001 - corrupt zip, unpickling refusal, ...
        raise CheckpointError(f"{p}: not a readable training checkpoint ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj
