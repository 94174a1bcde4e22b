"""Fair timing of several callables against each other, and the machine a run happened on
(shared by :mod:`mobilenets.deploy.bench` and the scripts in ``benchmarks/``)."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch


def quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of ``xs`` (``0 <= q <= 1``)."""
    xs = sorted(xs)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _time(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def interleaved_timings(fns: dict[str, Callable[[], object]], repeats: Optional[int] = None,
                        warmup: int = 5, seconds: float = 4.0, min_repeats: int = 10,
                        max_repeats: int = 150, round_ms: float = 50.0) -> dict[str, dict]:
    """Time several callables fairly against each other.

    Each callable is warmed up, then all run in rounds of ``k`` iterations each (``k`` chosen
    for about ``round_ms`` of work by the fastest one, at least 10 rounds), the order rotating
    every round. ``repeats`` (default: about ``seconds`` of the slowest callable, clamped to
    ``[min_repeats, max_repeats]``) is the number of timed iterations per callable.

    Returns ``{name: {"ms": median, "p25": ..., "p75": ..., "min": ..., "n": ...}}`` in
    milliseconds per call; also ``"round_medians"``, the per-round medians (to compute the
    noise of a ratio between two callables with :func:`ratio_spread`).
    """
    if not fns:
        raise ValueError("interleaved_timings needs at least one callable")
    names = list(fns)
    est = {}
    for name in names:
        est[name] = max(min(_time(fns[name], max(warmup, 1))), 1e-3)
    if repeats is None:
        repeats = int(min(max_repeats, max(min_repeats, round(seconds * 1e3 / max(est.values())))))
    k = int(max(1, min(10, round(round_ms / min(est.values())), repeats // 10)))
    rounds = max(1, math.ceil(repeats / k))
    times: dict[str, list[float]] = {n: [] for n in names}
    per_round: dict[str, list[float]] = {n: [] for n in names}
    gc.collect()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            n_it = min(k, repeats - r * k)
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                t = _time(fns[name], n_it)
                times[name] += t
                per_round[name].append(statistics.median(t))
    finally:
        if gc_was:
            gc.enable()
    return {n: {"ms": statistics.median(t), "p25": quantile(t, 0.25), "p75": quantile(t, 0.75),
                "min": min(t), "n": len(t), "round_medians": per_round[n]} for n, t in times.items()}


def ratio_spread(a: dict, b: dict) -> tuple[float, float]:
    """25th and 75th percentile of the per-round ratios ``a / b`` (two entries of
    :func:`interleaved_timings`): the noise of the ratio of their medians."""
    rs = [x / y for x, y in zip(a["round_medians"], b["round_medians"])]
    return quantile(rs, 0.25), quantile(rs, 0.75)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else what ``platform`` knows)."""
    import platform

    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> dict:
    import platform

    from ..version import __version__

    info = {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "mobilenets": __version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    for lib in ("timm", "onnxruntime", "torchvision"):
        with contextlib.suppress(ImportError):
            info[lib] = __import__(lib).__version__
    if hasattr(os, "getloadavg"):
        info["loadavg_start"] = round(os.getloadavg()[0], 2)
    return info
