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

``mobilenets.load_weights(model, "best.pt")`` therefore loads the deployable weights.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..weights.io import CheckpointError, atomic_write


def save_checkpoint(obj: Mapping[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash or signal
    mid-write never leaves a truncated checkpoint behind."""
    return atomic_write(path, lambda tmp: torch.save(dict(obj), tmp))


def load_checkpoint(path: str | Path) -> dict:
    """Read a training checkpoint with ``weights_only=True`` (no arbitrary unpickling)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt zip, unpickling refusal, ...
        raise CheckpointError(f"{p}: not a readable training checkpoint ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


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


def model_from_checkpoint(path: str | Path, use_ema: bool = True, model_name: str | None = None,
                          num_classes: int | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model a training checkpoint describes and load its weights.

    Returns ``(model in eval mode, info)`` with info keys ``recipe`` (dict), ``classes``,
    ``epoch``, ``best``. Plain weight files (``.safetensors`` or state dicts) need
    ``model_name`` and ``num_classes``.
    """
    import mobilenets

    p = Path(path)
    if p.suffix.lower() == ".safetensors":
        ck: dict = {}
    else:
        ck = load_checkpoint(p)
    recipe = ck.get("recipe") if isinstance(ck.get("recipe"), dict) else {}
    classes = list(ck.get("classes") or [])
    name = model_name or recipe.get("model") or (ck.get("mobilenets_meta") or {}).get("arch")
    if not name:
        raise CheckpointError(f"{p}: no architecture recorded; pass the model name (--model)")
    if ck.get("state_dict") is not None and isinstance(ck["state_dict"], dict):
        sd = ck["state_dict"] if use_ema or ck.get("model") is None else ck["model"]
    else:
        from ..weights import read_checkpoint
        sd, _ = read_checkpoint(p)
    fc = [v for k, v in sd.items() if k.endswith("head.fc.weight")]
    n = num_classes or (len(classes) if classes else (int(fc[0].shape[0]) if fc else None))
    if n is None:
        raise CheckpointError(f"{p}: cannot tell the number of classes; pass num_classes")
    model = mobilenets.create_model(name, num_classes=n)
    mobilenets.load_weights(model, sd)
    model.eval()
    info = {"recipe": recipe, "classes": classes or [str(i) for i in range(n)],
            "epoch": ck.get("epoch"), "best": ck.get("best")}
    return model, info
