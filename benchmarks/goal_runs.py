"""What the goal runs (benchmarks/train_detection.py, train_segmentation.py, int8_accuracy.py,
search_goal.py) share: running a command with its wall time, a pool of trainings a few at a time,
and the digits classifier a task model's backbone starts from."""

from __future__ import annotations

import json
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


def run_pool(tasks: list[tuple[str, list[str], Path]], jobs: int, finished) -> None:
    """Run ``(key, command, log file)`` tasks, ``jobs`` at a time; ``finished(key, returncode,
    seconds)`` after each."""
    todo, running = list(tasks), []
    while todo or running:
        while todo and len(running) < jobs:
            key, cmd, log_path = todo.pop(0)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(log_path, "a")
            print(f"[{time.strftime('%H:%M:%S')}] {key}: $ " + " ".join(cmd[2:]), flush=True)
            running.append((key, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log, time.time()))
        time.sleep(2)
        for item in list(running):
            key, proc, log, t0 = item
            if proc.poll() is not None:
                running.remove(item)
                log.close()
                finished(key, proc.returncode, time.time() - t0)


def clutter_train_cmd(model: str, d: Path, extra: list[str]) -> list[str]:
    """``mobilenets train`` of ``model`` on digit-clutter into ``d`` (one thread; resumed from its
    ``last.pt`` when there is one)."""
    resume = ["--resume", str(d / "last.pt")] if (d / "last.pt").exists() else []
    return EXE + ["train", "--data", "digit-clutter", "--model", model, "--threads", "1", "--no-progress",
                  "--out", str(d)] + extra + resume


def trained(d: Path) -> bool:
    """Whether ``d`` holds a finished training run (best.pt and every epoch of its recipe)."""
    m = d / "metrics.json"
    if not (m.exists() and (d / "best.pt").exists()):
        return False
    hist = json.loads(m.read_text()).get("history", [])
    epochs = json.loads(m.read_text()).get("recipe", {}).get("epochs")
    return bool(hist) and (epochs is None or len(hist) >= epochs)
