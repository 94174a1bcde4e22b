"""Reading the training checkpoints :mod:`mobilenets.train` writes (layout in
:mod:`mobilenets.train.checkpoint`): here, not in the training package, because deployment
(``mobilenets export``) and evaluation read them too."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .io import CheckpointError


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
        from . import read_checkpoint
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
