"""Training checkpoints: plain containers of tensors, written atomically, read with
``weights_only=True``.

Layout of ``best.pt`` / ``last.pt``::

    state_dict        weights to deploy: the EMA when the recipe keeps one, else the model
    model             the raw training weights (for resuming)
    ema               {"state_dict", "updates"} or None
    optimizer, step, epoch, batch_in_epoch, partial (running sums of an interrupted epoch)
    rng               torch / python / numpy (as tensors) / cuda generator states
    recipe            Recipe.to_dict(); classes; history (per-epoch metrics); best
    mobilenets_meta   {"format": "mobilenets", "arch": ...} as save_weights writes

``mobilenets.load_weights(model, "best.pt")`` therefore loads the deployable weights. Reading a
checkpoint back (:func:`load_checkpoint`, :func:`model_from_checkpoint`) lives in
:mod:`mobilenets.weights.checkpoint` and :func:`mobilenets.factory.model_from_checkpoint`, so deployment reads them without the training package.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Mapping

import torch

from ..factory import model_from_checkpoint
from ..weights.checkpoint import load_checkpoint
from ..weights.io import atomic_write

__all__ = ["CheckpointWriteError", "get_rng_state", "load_checkpoint", "model_from_checkpoint", "save_checkpoint", "set_rng_state"]


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, no permission); the previous one is kept."""


def save_checkpoint(obj: Mapping[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash, a signal or
    a full disk mid-write never leaves a truncated checkpoint behind, and the previous file at
    ``path`` stays as it was.

    Raises:
        CheckpointWriteError: the write failed (its message names the file and the reason).
    """
    try:
        return atomic_write(path, lambda tmp: torch.save(dict(obj), tmp))
    except OSError as e:
        raise _write_error(path, e.errno, e.strerror or str(e)) from e
    except RuntimeError as e:  # torch.save reports a failed write of its zip stream this way
        if "write" not in str(e).lower():
            raise
        raise _write_error(path, None, str(e).splitlines()[0]) from e


def _write_error(path: str | Path, errno: int | None, reason: str) -> CheckpointWriteError:
    keep = f"the previous {Path(path).name} is kept" if Path(path).exists() else "no earlier checkpoint exists"
    return CheckpointWriteError(errno, f"cannot write checkpoint {path}: {reason}; {keep} "
                                       f"(free disk space, then resume from it)")


def get_rng_state() -> dict:
    import numpy as np

    npst = np.random.get_state(legacy=False)
    py = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "python": {"version": py[0], "state": torch.tensor(py[1], dtype=torch.int64), "gauss": py[2]},
        "numpy": {"bit_generator": npst["bit_generator"],
                  "key": torch.from_numpy(npst["state"]["key"].astype("int64")),
                  "pos": int(npst["state"]["pos"]), "has_gauss": int(npst["has_gauss"]),
                  "gauss": float(npst["gauss"])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"],
                         "state": {"key": n["key"].numpy().astype("uint32"), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
