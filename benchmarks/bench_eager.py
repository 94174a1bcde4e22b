"""Eager inference latency, side by side: our models vs timm's implementation of the same one.

    python benchmarks/bench_eager.py [--models NAME ...] [--batch 1 32] [--size 224]
                                     [--threads 2] [--repeats N] [--warmup N] [--json FILE]

For every model and batch size both networks are built (timm's with random init, ours loaded
with timm's state dict so the two compute the same function), put in eval mode and run under
``torch.inference_mode()`` on the same input tensor; the outputs are checked to agree within
1e-4 (relative to the largest logit). The timings are interleaved: in each round both models
run ``k`` iterations, ours first in even rounds and timm first in odd ones, so that drift in
the machine's speed (other tenants, frequency scaling) hits both alike. Reported: the median
per-iteration latency of each model and ``ratio = ours / timm`` (< 1.0: we are faster), with
the 25th-75th percentile range of the per-round ratios as a noise indicator.

timm is a test/benchmark-only dependency: ``pip install timm``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import sys
import time
from pathlib import Path

import torch

import mobilenets
from mobilenets.deploy.bench import build_paths
from mobilenets.deploy.timing import interleaved_timings, machine_info, ratio_spread

DEFAULT_MODELS = [
    "mobilenetv1_100",
    "mobilenetv2_100",
    "mobilenetv3_large_100",
    "mobilenetv3_small_100",
    "mobilenetv4_conv_small",
    "mobilenetv4_conv_medium",
    "mobilenetv4_hybrid_medium",
]

# --repeats auto: time each model for about this many seconds per (model, batch)...
AUTO_SECONDS = 5.0
# ... but at least / at most this many timed iterations.
AUTO_MIN, AUTO_MAX = 10, 150


def bench_model(name: str, batch: int, size: int, threads: int, repeats, warmup) -> dict:
    """Ours vs timm eager for one model and batch size (the pair is built by
    :func:`mobilenets.deploy.bench.build_paths`, which loads timm's weights into ours and checks
    the outputs agree), timed interleaved."""
    built = build_paths(name, batch, size, threads, paths=["eager", "timm_eager"])
    try:
        if "timm_eager" not in built.fns:
            return {"skipped": built.notes.get("timm_eager", "no timm model")}
        res = interleaved_timings(built.fns, repeats, warmup, seconds=AUTO_SECONDS,
                                  min_repeats=AUTO_MIN, max_repeats=AUTO_MAX)
    finally:
        built.temp_dir.cleanup()
    ours, ref = res["eager"], res["timm_eager"]
    lo, hi = ratio_spread(ours, ref)
    out = built.outputs
    rel = float((out["eager"] - out["timm_eager"]).abs().max() / out["timm_eager"].abs().max())
    return {"ours_ms": ours["ms"], "timm_ms": ref["ms"], "ratio": ours["ms"] / ref["ms"],
            "ratio_p25": lo, "ratio_p75": hi, "repeats": ours["n"], "max_rel_err": rel,
            "timm_model": mobilenets.get_entry(name).reference.get("timm")}


def format_table(rows: list[dict]) -> str:
    head = ["model", "batch", "ours ms", "timm ms", "ratio", "ratio p25-p75", "n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * 5) + "|"]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['model']} | {r['batch']} | - | - | - | {r['skipped']} | - |")
            continue
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['ours_ms']:.2f} | {r['timm_ms']:.2f} | "
            f"{r['ratio']:.3f} | {r['ratio_p25']:.3f}-{r['ratio_p75']:.3f} | {r['repeats']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS,
                    help="registry names or patterns (default: the 7 headline models)")
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--size", type=int, default=224, help="input resolution")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--repeats", type=int, default=None,
                    help=f"timed iterations per model (default: auto, ~{AUTO_SECONDS:g} s each, "
                         f"clamped to [{AUTO_MIN}, {AUTO_MAX}])")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed iterations per model (default: 10 at batch 1, 2 at larger batch)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)

    try:
        import timm  # noqa: F401  (fail early with a message)
    except ImportError:
        print("bench_eager.py compares against timm, which is not installed. timm is a "
              "test/benchmark-only dependency: pip install timm", file=sys.stderr)
        return 2

    torch.set_num_threads(args.threads)
    names: list[str] = []
    for pat in args.models:
        found = mobilenets.list_models(pat) if any(c in pat for c in "*?[") else [pat]
        for n in found:
            if n not in names:
                names.append(n)
    if not names:
        print(f"no model matches {args.models}", file=sys.stderr)
        return 2

    info = machine_info(torch.get_num_threads())
    info["date"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    print(f"CPU: {info['cpu']} ({info['logical_cpus']} logical CPUs), threads {info['threads']}, "
          f"torch {info['torch']}, timm {info['timm']}, input {args.size}x{args.size}", flush=True)
    if info.get("loadavg_start", 0) > 1.0:
        print(f"warning: load average {info['loadavg_start']:.1f} before start: other processes "
              "are using the CPU and the timings will be noisy", file=sys.stderr, flush=True)

    rows: list[dict] = []
    t_start = time.perf_counter()
    for name in names:
        for b in args.batch:
            warmup = args.warmup if args.warmup is not None else (10 if b == 1 else 2)
            try:
                res = bench_model(name, b, args.size, args.threads, args.repeats, warmup)
            except Exception as e:  # unknown name, timm build, weight loading or output mismatch
                print(f"{name}: {e}", file=sys.stderr)
                res = {"skipped": "failed"}
            rows.append({"model": name, "batch": b, "size": args.size, **res})
            if "skipped" in res:
                print(f"{name}: skipped ({res['skipped']})", flush=True)
                continue
            print(f"{name:28s} b{b:<3d} ours {res['ours_ms']:8.2f} ms  timm {res['timm_ms']:8.2f} ms"
                  f"  ratio {res['ratio']:.3f} [{res['ratio_p25']:.3f}-{res['ratio_p75']:.3f}]"
                  f"  n={res['repeats']}", flush=True)
        gc.collect()
    elapsed = time.perf_counter() - t_start
    if hasattr(os, "getloadavg"):
        info["loadavg_end"] = os.getloadavg()[0]

    print()
    print(f"Eager inference vs timm -- {info['date'][:10]}, {info['cpu']}, {info['threads']} threads, "
          f"torch {info['torch']}, timm {info['timm']}, {args.size}x{args.size}, fp32")
    print(format_table(rows))
    print(f"\nratio = ours / timm median latency (< 1.0: we are faster); total {elapsed:.0f} s")
    slower = [r for r in rows if not r.get("skipped") and r["ratio"] > 1.0 and r["ratio_p25"] > 1.0]
    if slower:
        print("slower than timm in at least 3 rounds out of 4 (ratio p25 > 1.0): "
              + ", ".join(f"{r['model']} b{r['batch']} ({r['ratio']:.3f})" for r in slower))
    else:
        print("no model is slower than timm beyond noise (no row has ratio p25 > 1.0)")
    noisy = [r for r in rows if not r.get("skipped") and r["ratio_p75"] - r["ratio_p25"] > 0.1]
    if noisy:
        print("noisy rows (per-round ratio IQR > 0.1; was something else running?): "
              + ", ".join(f"{r['model']} b{r['batch']}" for r in noisy))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "size": args.size,
                                               "elapsed_s": elapsed, "results": rows}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
