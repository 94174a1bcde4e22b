"""How well a latency table predicts whole networks: N random architectures of a search space,
predicted (sum of their parts' medians + the overhead fitted on other networks) vs measured in the
same runtime on this machine. Mean absolute error and Spearman rank correlation go to
benchmarks/SEARCH.md.

    python benchmarks/search_latency.py --runtime ort --out /tmp/lat_ort.json
    python benchmarks/search_latency.py --runtime litert --out /tmp/lat_litert.json

The table holds only the parts of the architectures it needs (the validation ones and the fit
ones), measured exactly as ``mobilenets search table`` measures every part of a space; the JSON
is rewritten after every entry, so a killed run resumes.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

import mobilenets
from mobilenets.deploy.timing import machine_info
from mobilenets.search.latency import (LatencyTable, mean_abs_pct_error, network_parts, rank_correlation,
                                       runtime_timer)
from mobilenets.search.measure import measure_networks
from mobilenets.search.spaces import load_space


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="mnv4_conv_small")
    ap.add_argument("--width-mult", type=float, default=0.5)
    ap.add_argument("--runtime", default="ort", choices=("ort", "executorch", "litert"))
    ap.add_argument("--precision", default="fp32", choices=("fp32", "int8"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--n", type=int, default=20, help="validation architectures")
    ap.add_argument("--fit", type=int, default=5, help="networks the overhead is fitted on")
    ap.add_argument("--seconds", type=float, default=0.5, help="timing per part")
    ap.add_argument("--net-seconds", type=float, default=2.0, help="timing per whole network (interleaved)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    space = load_space(args.space).with_width(args.width_mult)
    size = (args.size, args.size)
    rng_val, rng_fit = random.Random(100), random.Random(0)
    val = [space.to_spec(space.sample(rng_val)) for _ in range(args.n)]
    fit = [mobilenets.model_spec(n).replace(width_mult=args.width_mult) for n in space.contains]
    fit += [space.to_spec(space.sample(rng_fit)) for _ in range(args.fit - len(fit))]
    out = Path(args.out)
    table = (LatencyTable.load(out) if out.exists() else
             LatencyTable.new(space, size, args.runtime, args.precision, args.threads, path=out))
    table.check_for(space, size, args.runtime, args.precision)
    parts = {p.key: p for spec in val + fit for p in network_parts(spec, size)}
    measure = runtime_timer(args.runtime, args.precision, args.threads, args.seconds)
    t0 = time.time()
    todo = [k for k in parts if k not in table.entries]
    for i, key in enumerate(todo):
        table.entries[key] = measure(parts[key].materialize(), parts[key].in_shape)
        table.save()
        print(f"\rparts {i + 1}/{len(todo)}", end="", file=sys.stderr)
    print(f"\n{len(parts)} parts measured in {time.time() - t0:.0f} s", file=sys.stderr)
    # whole networks: every validation and fit network exported once, then timed in one interleaved
    # run (deploy.timing), so load drifting over the run hits them all alike
    meas_all = [m["ms"] for m in measure_networks(val + fit, table, args.net_seconds)]
    meas, meas_fit = meas_all[:len(val)], meas_all[len(val):]
    for spec, ms in zip(fit, meas_fit):
        table.networks[str(spec)] = {"measured": {"median": ms, "ms": ms}, "sum_ms": table.parts_ms(spec)}
    table.save()
    pred = [table.predict(s) for s in val]
    res = {"space": space.name, "width_mult": args.width_mult, "runtime": args.runtime, "precision": args.precision,
           "threads": args.threads, "size": args.size, "parts": len(parts), "fit_networks": len(fit),
           "overhead_ms": table.overhead_ms, "predicted_ms": pred, "measured_ms": meas,
           "mean_abs_error_pct": mean_abs_pct_error(pred, meas), "spearman": rank_correlation(pred, meas),
           "machine": machine_info(args.threads), "seconds": time.time() - t0}
    out.with_suffix(".result.json").write_text(json.dumps(res, indent=1, default=str))
    print(f"{args.runtime} {args.precision}, {args.threads} thread(s), {args.n} architectures: mean abs error "
          f"{res['mean_abs_error_pct']:.1f} %, Spearman {res['spearman']:.3f}; overhead {table.overhead_ms:+.3f} ms; "
          f"measured {min(meas):.2f}-{max(meas):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
