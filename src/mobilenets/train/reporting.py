"""What a run shows and leaves behind besides checkpoints: progress bars, ``metrics.csv`` /
``metrics.json`` and the curves plot."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Optional


class _Printer:
    """Fallback progress: a line at every quarter of the epoch."""

    def __init__(self, total: int, desc: str, stream=sys.stderr):
        self.total, self.desc, self.n, self.stream = total, desc, 0, stream
        self.marks = {max(1, round(total * q / 4)) for q in (1, 2, 3, 4)}
        self.post = ""

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.n in self.marks:
            print(f"{self.desc} {self.n}/{self.total} {self.post}", file=self.stream, flush=True)

    def set_postfix_str(self, s: str) -> None:
        self.post = s

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar (or a line per quarter without tqdm); ``None`` when ``enabled`` is false."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)
    except ImportError:
        return _Printer(total, desc)


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


def plot_curves(history: list[dict], path: Path) -> Optional[Path]:
    """Loss (train, val) and the accuracy-like metrics the rows have (top-1 for classification,
    mAP / mAP50 for detection, mIoU / pixel accuracy for segmentation) per epoch; epochs without validation are skipped. ``None`` if
    matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None

    def series(key):
        pts = [(h["epoch"], h[key]) for h in history if key in h]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train_loss", "train"), ("val_loss", "val")):
        if any(key in h for h in history):
            a.plot(*series(key), marker=".", label=label)
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend(), a.grid(alpha=0.3)
    for key, label in CURVES.items():
        if any(key in h for h in history):
            b.plot(*series(key), marker=".", label=label)
    b.set_xlabel("epoch"), b.set_ylabel("accuracy (top-1 %, mAP or mIoU)"), b.legend(), b.grid(alpha=0.3)
    fig.tight_layout()
    from ..weights.io import atomic_write
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return path
