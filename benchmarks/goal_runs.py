"""What the task goal runs (benchmarks/train_detection.py, train_segmentation.py) share: running a
command with its wall time, and the digits classifier a task model's backbone starts from."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

EXE = [sys.executable, "-m", "mobilenets"]


def run(cmd: list[str]) -> float:
    """Run ``cmd`` (echoed), raising if it fails; its wall time in seconds."""
    print("$ " + " ".join(cmd), flush=True)
    t = time.time()
    subprocess.run(cmd, check=True)
    return time.time() - t


def children_cpu_s() -> float:
    """CPU seconds (user + system, all threads) used so far by this process's finished children."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def digits_classifier(backbone: str, out: Path, threads: int, reuse: bool = True) -> tuple[Path, float]:
    """``(best.pt, minutes)`` of ``mobilenets train --model <backbone>`` (the digits recipe) in
    ``out``; an existing ``best.pt`` there is reused (0 minutes) when ``reuse``."""
    best = out / "best.pt"
    if reuse and best.exists():
        print(f"reusing {best}", flush=True)
        return best, 0.0
    t = run(EXE + ["train", "--model", backbone, "--out", str(out), "--no-progress", "--threads", str(threads)])
    return best, round(t / 60, 1)
