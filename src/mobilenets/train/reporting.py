"""What a run shows and leaves behind besides checkpoints: progress bars, ``metrics.csv`` /
``metrics.json`` and the curves plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional

from ..progress import progress_bar as _shared_progress_bar


def progress_bar(total: int, desc: str, enabled: bool):
    """The epoch's progress (:func:`mobilenets.progress.progress_bar`): a tqdm bar on a
    terminal, a line per quarter of the epoch otherwise; ``None`` when ``enabled`` is false."""
    return _shared_progress_bar(total, desc, enabled)


def write_metrics(history: list[dict], out_dir: Path, summary: dict) -> tuple[Path, Path]:
    keys: list[str] = []
    for h in history:
        keys += [k for k in h if k not in keys]
    csv_path, json_path = out_dir / "metrics.csv", out_dir / "metrics.json"
    from ..weights.io import atomic_write

    def write_csv(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            for h in history:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in h.items()})

    atomic_write(csv_path, write_csv)
    atomic_write(json_path, lambda tmp: Path(tmp).write_text(json.dumps({**summary, "history": history}, indent=2)))
    return csv_path, json_path


#: the accuracy-like curves a history may have: row key -> legend label (what is present is drawn)
CURVES = {"train_top1": "train top-1 (%)", "val_top1": "val top-1 (%)", "ema_val_top1": "EMA val top-1 (%)",
          "val_map": "val mAP", "val_map50": "val mAP50", "ema_val_map": "EMA val mAP",
          "ema_val_map50": "EMA val mAP50", "val_miou": "val mIoU", "val_pixel_acc": "val pixel accuracy",
          "ema_val_miou": "EMA val mIoU"}


#: the right panel's y label per task (its validation metric)
METRIC_LABELS = {"classify": "top-1 accuracy (%)", "detect": "mAP (COCO, IoU 0.50:0.95) and mAP50",
                 "segment": "mIoU and pixel accuracy"}


def curves_figure(history: list[dict], run: Optional[dict] = None):
    """The curves as a matplotlib figure (see :func:`plot_curves`); ``run``: what the title and
    notes say (``model``, ``dataset``, ``out`` the run folder, ``task``, ``label_smoothing``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    run = run or {}

    def series(key):
        pts = [(h["epoch"], h[key]) for h in history if key in h]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.4))
    for key, label in (("train_loss", "train"), ("val_loss", "val")):
        if any(key in h for h in history):
            a.plot(*series(key), marker=".", label=label)
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend(), a.grid(alpha=0.3)
    smoothing = float(run.get("label_smoothing") or 0)
    if smoothing > 0 and run.get("task", "classify") == "classify":
        # cross-entropy against smoothed targets cannot reach 0: the floor is the targets' entropy
        a.set_title(f"train loss includes label smoothing {smoothing:g} (floor above 0); val loss does not",
                    fontsize=9)
    for key, label in CURVES.items():
        if any(key in h for h in history):
            b.plot(*series(key), marker=".", label=label)
    b.set_xlabel("epoch"), b.set_ylabel(METRIC_LABELS.get(run.get("task", ""), "accuracy (top-1 %, mAP or mIoU)"))
    b.legend(), b.grid(alpha=0.3)
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    parts = [run.get("model"), f"on {run['dataset']}" if run.get("dataset") else None,
             f"({Path(run['out']).name})" if run.get("out") else None]
    if any(parts):
        fig.suptitle(" ".join(p for p in parts if p))
    fig.tight_layout()
    return fig


def plot_curves(history: list[dict], path: Path, run: Optional[dict] = None) -> Optional[Path]:
    """Loss (train, val) and the accuracy-like metrics the rows have (top-1 for classification,
    mAP / mAP50 for detection, mIoU / pixel accuracy for segmentation) per epoch, titled with the
    model, data and run (``run``: see :func:`curves_figure`); epochs without validation are
    skipped. ``None`` if matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    import matplotlib.pyplot as plt

    fig = curves_figure(history, run)
    from ..weights.io import atomic_write
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return path
