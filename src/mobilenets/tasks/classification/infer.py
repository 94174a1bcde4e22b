"""Evaluate a checkpoint on a dataset, and predict the top-k classes of image files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch

from ...data import read_rgb, transform_for
from ...factory import model_from_checkpoint
from ...data.classification import BUILTIN_DATASETS, ImageFolderDataset, build_datasets, eval_transform
from ...train.recipe import Recipe
from .evaluate import evaluate


def _recipe_of(info: dict, img_size: Optional[int] = None) -> Recipe:
    r = Recipe.from_dict(info.get("recipe") or {})
    if img_size:
        r = r.replace(img_size=img_size)
    return r


def eval_checkpoint(checkpoint: str | Path, data: str = "digits", batch_size: int = 128,
                    use_ema: bool = True, img_size: Optional[int] = None,
                    confusion_png: Optional[str | Path] = None, model_name: Optional[str] = None,
                    file: Optional[str | Path] = None) -> dict:
    """Top-1 / top-5 / loss of a checkpoint on ``data``: a built-in dataset (``digits``,
    ``digit-clutter``, ``fake``: the validation split the training recipe's settings give) or an
    image-folder path (all of it, or its ``val/``). ``file``: an export of the checkpoint
    (``.onnx``, ``.pte``, ``.tflite``, e.g. INT8) evaluated in its runtime instead of the eager
    model, on the same data and preprocessing (:class:`~mobilenets.deploy.runtimes.FileModel`)."""
    model, info = model_from_checkpoint(checkpoint, use_ema=use_ema, model_name=model_name)
    if file is not None:
        from ...deploy.runtimes import FileModel

        model = FileModel(file)
    r = _recipe_of(info, img_size)
    classes = info["classes"]
    if data in BUILTIN_DATASETS:
        ds = build_datasets(r.replace(dataset=data)).val
    else:
        root = Path(data)
        if (root / "val").is_dir():
            root = root / "val"
        ds = ImageFolderDataset(root, eval_transform(r), classes=classes)
        if len(ds) == 0:
            raise ValueError(f"{root}: no images found")
    if len(ds.classes) != len(classes):
        raise ValueError(f"{data} has {len(ds.classes)} classes but the checkpoint predicts {len(classes)}")
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)
    res = evaluate(model, loader, torch.device("cpu"), len(classes), confusion=True)
    if file is not None:
        res["file"], res["runtime"] = model.path, model.runtime
    if confusion_png is not None:
        res["confusion_png"] = plot_confusion(res["confusion"], classes, confusion_png)
    return res


def plot_confusion(cm: torch.Tensor, classes: Sequence[str], path: str | Path) -> Optional[Path]:
    """Row-normalised confusion matrix (rows: true class); ``None`` without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    n = len(classes)
    norm = cm.double() / cm.sum(1, keepdim=True).clamp(min=1)
    size = min(12, 2 + 0.4 * n)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title("confusion matrix")
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p


def predict(checkpoint: str | Path, images: Sequence[str | Path], topk: int = 5, use_ema: bool = True,
            model_name: Optional[str] = None) -> list[dict]:
    """For each image file, in order: ``{"image", "top": [(class name, probability), ...]}``, or
    ``{"image", "error"}`` (the file and the cause) for one that cannot be read; the other images
    are still classified."""
    model, info = model_from_checkpoint(checkpoint, use_ema=use_ema, model_name=model_name)
    tf = transform_for(info["model_info"])  # the preprocessing the model was trained (or built) with
    classes = info["classes"]
    k = max(1, min(topk, len(classes)))
    out = []
    for path in images:
        p = Path(path)
        if not p.is_file():
            out.append({"image": str(p), "error": f"{p}: image not found"})
            continue
        try:
            x = read_rgb(p)
        except OSError as e:
            out.append({"image": str(p), "error": f"{p}: not a readable image ({e})"})
            continue
        with torch.no_grad():
            prob = model(tf(x).unsqueeze(0)).softmax(-1)[0]
        v, i = prob.topk(k)
        out.append({"image": str(p), "top": [(classes[j], float(pv)) for pv, j in zip(v.tolist(), i.tolist())]})
    return out
