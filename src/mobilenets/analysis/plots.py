"""Plots (matplotlib, imported lazily): latency vs accuracy across ridge points (the
MobileNetV4 paper's Figures 2-3 style) and a per-layer operational-intensity chart."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

from .profile import Profile
from .roofline import Sweep

KIND_COLORS = {"conv": "tab:blue", "dwconv": "tab:orange", "linear": "tab:green",
               "matmul": "tab:purple", "attention": "tab:red"}


def _plt():
    from ..extras import require
    matplotlib = require("matplotlib", "plotting")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: Union[str, Path]) -> Path:
    """Lay out ``fig``, write it to ``path`` (PNG at 110 dpi, the library's figures), close it;
    returns the path."""
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _short(name: str) -> str:
    return (name.replace("mobilenet", "mn").replace("_conv_", "-c-").replace("_hybrid_", "-h-")
            .replace("mobileformer", "mf").replace("_large", "-L").replace("_small", "-S"))


def plot_sweep(sw: Sweep, accuracy: Mapping[str, float], path: Union[str, Path],
               rps: Optional[Sequence[float]] = None, title: Optional[str] = None) -> Path:
    """One panel per ridge point: roofline time (ms, log x) vs top-1, Pareto front drawn.

    Only models with an accuracy are drawn. Returns the written path.
    """
    plt = _plt()
    rps = list(rps or sw.rps)
    n = len(rps)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, rp in zip(axes.flat, rps):
        t = {m: v * 1e3 for m, v in sw.times(rp).items() if m.split("@")[0] in accuracy}
        acc = {m: float(accuracy[m.split("@")[0]]) for m in t}
        front = sw.pareto(rp, acc)
        lo, hi = (min(t.values()), max(t.values())) if t else (1.0, 1.0)
        for m in t:
            on = m in front
            ax.scatter(t[m], acc[m], s=36 if on else 22, zorder=3,
                       color="tab:red" if on else "tab:gray", alpha=1.0 if on else 0.7)
            # labels right of the point, left of it for the slowest third (keeps them inside)
            left = t[m] > hi ** (2 / 3) * lo ** (1 / 3)
            ax.annotate(_short(m), (t[m], acc[m]), fontsize=7, xytext=(-4 if left else 4, 3),
                        textcoords="offset points", ha="right" if left else "left",
                        color="black" if on else "dimgray")
        if front:
            ax.plot([t[m] for m in front], [acc[m] for m in front], "-", color="tab:red", lw=1.5,
                    zorder=2, label="Pareto front")
        ax.set_xscale("log")
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title("RP = 0 (MACs only)" if rp == 0 else f"RP = {rp} MACs/byte", fontsize=10)
        ax.set_xlabel(f"roofline latency (ms) at {sw.peak_macs / 1e12:g} TMAC/s")
        ax.set_ylabel("ImageNet top-1 (%)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title or "Roofline latency vs accuracy", fontsize=12)
    return save_figure(fig, path)


def plot_intensity(prof: Profile, path: Union[str, Path],
                   rps: Sequence[float] = (10, 50, 100, 500)) -> Path:
    """Bar per layer: operational intensity (MACs per byte, log scale), coloured by op kind,
    with the ridge points as horizontal lines (bars below a line are memory-bound there)."""
    plt = _plt()
    layers = prof.layers
    n = len(layers)
    fig, ax = plt.subplots(figsize=(max(8.0, min(0.12 * n + 3, 24)), 4.8))
    xs = range(n)
    vals = [max(r.intensity, 1e-3) for r in layers]
    ax.bar(xs, vals, width=0.85, color=[KIND_COLORS.get(r.kind, "tab:gray") for r in layers])
    for rp in rps:
        if rp > 0:
            ax.axhline(rp, color="black", ls="--", lw=0.8, alpha=0.6)
            ax.text(n - 1, rp, f"RP {rp}", va="bottom", ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlim(-1, n)
    ax.set_ylabel("MACs / byte")
    ax.set_xlabel("layer (execution order)")
    # label stage boundaries instead of every layer
    from .profile import stage_of
    ticks, labels, prev = [], [], None
    for i, r in enumerate(layers):
        s = stage_of(r.name)
        if s != prev:
            ticks.append(i)
            labels.append(s)
            prev = s
    for i in ticks[1:]:
        ax.axvline(i - 0.5, color="gray", lw=0.5, alpha=0.5)
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, rotation=90, fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for k, c in KIND_COLORS.items()
               if any(r.kind == k for r in layers)]
    ax.legend(handles, [k for k in KIND_COLORS if any(r.kind == k for r in layers)],
              fontsize=8, loc="upper left", ncol=5)
    ax.set_title(f"{prof.model} @ {prof.input_size[0]}x{prof.input_size[1]}, {prof.dtype}: "
                 f"operational intensity per layer ({prof.macs / 1e6:.0f} MMACs, "
                 f"{prof.bytes / 2**20:.1f} MiB)", fontsize=10)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    return save_figure(fig, path)


def plot_op_profile(prof, path: Union[str, Path], top: int = 15) -> Path:
    """Horizontal bars of an exported file's time per operator kind
    (:class:`~mobilenets.deploy.op_profile.OpProfile`, ExecuTorch: the runtime's own timings),
    the ``top`` kinds, with the call's time outside every operator as its own bar; a LiteRT
    profile (no per-op times) plots operator counts, those outside XNNPACK in red."""
    plt = _plt()
    rows = prof.by_kind()
    timed = any(ms is not None for _, _, ms in rows)
    if timed:
        rows = [(k, n, ms or 0.0) for k, n, ms in rows][:top]
        outside_ops = prof.total_ms - sum(op["ms"] or 0.0 for op in prof.ops)
        labels = [f"{k} (x{n})" for k, n, _ in rows] + ["the call outside its operators"]
        vals = [ms for _, _, ms in rows] + [max(outside_ops, 0.0)]
        colors = ["tab:blue"] * len(rows) + ["tab:gray"]
        xlabel = f"ms per call (total {prof.total_ms:.3f} ms)"
    else:
        rows = sorted(rows, key=lambda r: -r[1])[:top]
        labels = [k for k, _, _ in rows]
        vals = [n for _, n, _ in rows]
        colors = ["tab:red" if k in prof.outside else "tab:blue" for k in labels]
        xlabel = f"operators ({len(prof.ops)} in all; red: outside XNNPACK, {prof.partitions} partition(s))"
    fig, ax = plt.subplots(figsize=(8.0, 0.32 * len(labels) + 1.4))
    ys = range(len(labels))
    ax.barh(ys, vals, color=colors)
    ax.set_yticks(list(ys))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(f"{Path(prof.path).name} ({prof.runtime}, {prof.threads} threads)", fontsize=9)
    return save_figure(fig, path)
