"""The search's figure: reward and held-out accuracy, the latency of the sampled paths against
the target, and how sure the controller is of each decision over time."""

from __future__ import annotations

from pathlib import Path
from typing import Union


def _smooth(values: list, k: int) -> list:
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > k:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def plot_search(summary: dict, path: Union[str, Path]) -> Path:
    """Three panels from a search's ``history.json`` content: reward and quality (moving
    average), sampled latency with the target, and per decision the probability of its most
    likely choice at each snapshot (one line per decision, the final choice's label at the end);
    with re-ranking (``search run --rerank``) a fourth: each candidate's held-out top-1 after its
    short training against its predicted latency, the found one marked."""
    from ..analysis.plots import _plt, save_figure

    plt = _plt()
    hist = summary["history"]
    x = list(range(len(hist)))
    k = max(1, len(hist) // 30)
    rr = summary.get("rerank") or {}
    fig, axes = plt.subplots(1, 4 if rr.get("results") else 3, figsize=(20 if rr.get("results") else 15, 4.2))
    ax = axes[0]
    ax.plot(x, _smooth([h["reward"] for h in hist], k), label="reward")
    ax.plot(x, _smooth([h["quality"] for h in hist], k), label="held-out top-1 (batch)")
    ax.set(xlabel="step", title="reward and quality (moving average)")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.scatter(x, [h["latency_ms"] for h in hist], s=4, alpha=0.4, label="sampled path")
    ax.axhline(summary["target_ms"], color="tab:red", ls="--", label=f"target {summary['target_ms']:g} ms")
    ax.axhline(summary["predicted_ms"], color="tab:green", ls=":", label=f"found {summary['predicted_ms']:.3g} ms")
    ax.set(xlabel="step", ylabel=f"predicted ms ({summary['runtime']} {summary['precision']})",
           title="latency of the sampled paths")
    ax.legend(fontsize=8)
    ax = axes[2]
    snaps = summary["probabilities"]
    offset, starts = 0, {}
    for snap in snaps:  # steps restart per stage: lay the stages end to end
        starts.setdefault(snap["stage"], None)
    steps, by_stage_len = [], {}
    for h in hist:
        by_stage_len[h["stage"]] = max(by_stage_len.get(h["stage"], 0), h["step"] + 1)
    for stage in by_stage_len:
        starts[stage] = offset
        offset += by_stage_len[stage]
    steps = [starts.get(s["stage"], 0) + s["step"] for s in snaps]
    names = sorted({n for s in snaps for n, p in s["p"].items() if len(p) > 1})
    for n in names:
        ax.plot(steps, [max(s["p"][n]) if n in s["p"] and len(s["p"][n]) > 1 else float("nan") for s in snaps],
                lw=0.8, alpha=0.7)
    ax.set(xlabel="step", ylabel="probability of the top choice", ylim=(0, 1.02),
           title=f"controller certainty ({len(names)} decisions)")
    for stage, start in starts.items():
        if start:
            ax.axvline(start, color="grey", ls="--", lw=0.8)
            ax.text(start, 1.0, f" {stage}", fontsize=8, va="top")
    if rr.get("results"):
        ax = axes[3]
        res = rr["results"]
        ms = rr["predicted_ms"][:len(res)]
        top = [r["heldout_top1"] for r in res]
        ax.scatter(ms, top, s=18, label="candidate")
        k = next(i for i, r in enumerate(res) if r["spec"] == rr["pick"])
        ax.scatter([ms[k]], [top[k]], s=90, marker="*", color="tab:red", label="found")
        if res[0]["spec"] == rr.get("controller_pick"):
            ax.scatter([ms[0]], [top[0]], s=60, facecolors="none", edgecolors="black", label="controller's pick")
        ax.axvline(summary["target_ms"], color="tab:red", ls="--", lw=0.8)
        ax.set(xlabel="predicted ms", ylabel=f"held-out top-1 (%) after {rr['epochs']} epoch(s) alone",
               title=f"re-ranking: {len(res)} of {len(rr['candidates'])} candidates")
        ax.legend(fontsize=8)
    fig.suptitle(f"search: {summary['steps']} steps in {summary['seconds'] / 60:.1f} min", fontsize=10)
    return save_figure(fig, path)
