"""Issue 25's Goal: does the search find a better network than the hand-designed one and than
random ones at the same measured latency, on digit-clutter, for a given runtime?

    python benchmarks/search_goal.py --table litert_int8=litert_int8_small050.json \\
        --table ort_fp32=ort_small050.json --out goal --search-minutes 25
    python benchmarks/search_goal.py ... --only report          # redo the table and figure
    python benchmarks/search_goal.py --scaling --out goal       # search cost: 1 process vs torchrun 2

Steps (each one's result lands in OUT/goal.json before the next starts; a rerun skips what is
done, and a killed search or training resumes, so the whole run survives interruption):

1. ``target``: per table, the latency target: MNv4-Conv-S at the table's width measured in the
   table's runtime (the whole network the table's overhead was fitted on; ``--target NAME=MS``
   gives it instead).
2. ``search``: ``mobilenets search run`` per table (the table's space and width, digit-clutter,
   ``--search-minutes``, one torch thread).
3. ``pick``: random architectures of the space whose *predicted* latency is within +-5 % of the
   target in every table (seeded sampling), ``--candidates`` of them.
4. ``measure``: per table, MNv4-Conv-S, every found network and the candidates exported and timed
   in one interleaved run in the table's runtime (so load drifts hit them alike); per table, the
   first ``--randoms`` candidates within +-5 % of MNv4-Conv-S's latency *measured in that run*
   (those trained already for another table first) are that runtime's random baselines.
5. ``train``: every network x ``--seeds`` with ``mobilenets train --data digit-clutter --model
   SPEC --set seed=S`` (the ``digit_clutter`` recipe, epoch-bounded, one thread each,
   ``--jobs`` at a time). The seed draws the generated images, the initialisation and the order,
   the same per seed for every network, so networks are compared seed by seed too.
6. ``report``: a markdown table (mean, spread, per seed) and accuracy vs measured latency per
   runtime (OUT/search_goal.png).

Not run by default: ``rank`` (``--rank-searches``: does a search's supernet rank the trained
networks as training does) and ``proxy`` (``--proxy-searches``: the re-ranked candidates of a
``--rerank`` search trained with the full recipe, seed 0: does the re-ranking's short training
rank them as the full recipe does; OUT/search_proxy_<search>.png).

``--scaling`` times a fixed number of search steps with one process and with torchrun's 2 (one
thread each) and reports steps / minute, architectures sampled / minute and CPU-minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from goal_runs import EXE, children_cpu_s, clutter_train_cmd, run_pool, trained

TOL = 0.05


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _save(path: Path, state: dict) -> None:
    from mobilenets.weights.io import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(state, indent=1)))


def _tables(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--table: expected NAME=TABLE.json (e.g. litert_int8=table.json), got {item!r}")
        if not Path(path).exists():
            raise SystemExit(f"--table {name}: no file {path!r} (build it with mobilenets search table)")
        out[name] = Path(path).resolve()
    return out


def _reference_spec(table):
    """The hand-designed network the table's space contains, at the table's width."""
    import mobilenets
    from mobilenets.search.spaces import load_space

    return mobilenets.model_spec(load_space(table.space.name).contains[0]).replace(
        width_mult=table.space.frame.width_mult)


def step_target(state, tables, given) -> None:
    from mobilenets.search.latency import LatencyTable, measure_network

    for name, path in tables.items():
        if name in state.setdefault("targets", {}):
            continue
        table = LatencyTable.load(path)
        ref = _reference_spec(table)
        if name in given:
            ms, how = given[name], "given (--target)"
        else:
            ms, how = measure_network(ref, table, seconds=5.0)["median"], "measured (search.latency.measure_network, 5 s)"
        state["targets"][name] = {"ms": ms, "how": how, "reference": str(ref), "table": str(path),
                                  "predicted_ms": table.predict(ref), "runtime": table.meta["runtime"],
                                  "precision": table.meta["precision"], "threads": table.meta["threads"]}
        print(f"target {name}: {ms:.3f} ms ({how}; the table predicts {table.predict(ref):.3f})", flush=True)


def step_search(state, tables, out: Path, minutes: float, seed: int, beta: float, one_stage: bool = False,
                feedback: int = 0, steps: int = 0, sandwich: bool = False, rerank: int = 0,
                rerank_epochs: int = 2) -> None:
    """One search per table; ``one_stage``: every decision at once (the expansion too), as
    ``search_<table>_onestage`` (found networks labelled ``found_<table>_onestage``);
    ``feedback``: the target is MNv4-Conv-S's latency measured beside the controller's choice
    ``feedback`` times per stage (``search run --target-model --feedback``), suffix ``_feedback``.
    ``steps``: a fixed number of search steps (``--minutes`` then only caps the wall time), so a
    busy machine stretches the search instead of cutting its schedules short. A search whose
    result.json exists (e.g. run by another driver process) is adopted. ``rerank``: ``search run
    --rerank K --rerank-epochs E`` (the final candidates trained alone for E epochs each, half
    the minutes), suffix ``_rerank``."""
    from mobilenets.search.latency import LatencyTable

    for table_name, path in tables.items():
        name = (table_name + ("_onestage" if one_stage else "") + ("_feedback" if feedback else "")
                + ("_sandwich" if sandwich else "") + ("_rerank" if rerank else ""))
        d = out / f"search_{name}"
        if name in state.setdefault("searches", {}) and (d / "found.json").exists():
            continue
        table = LatencyTable.load(path)
        t = state["targets"][table_name]
        width = table.space.frame.width_mult
        target = ["--target-model", t["reference"], "--feedback", str(feedback)] if feedback else \
            ["--target-ms", f"{t['ms']:.4f}"]
        cmd = EXE + ["search", "run", "--space", table.space.name, "--width-mult", str(width), "--table", str(path),
                     *target, "--data", "digit-clutter", "--minutes", str(minutes),
                     "--threads", "1", "--seed", str(seed), "--beta", str(beta), "--out", str(d), "--quiet", "--json", str(d / "result.json")]
        cmd += ["--one-stage"] if one_stage else []
        cmd += ["--steps", str(steps)] if steps else []
        cmd += ["--sandwich"] if sandwich else []
        cmd += ["--rerank", str(rerank), "--rerank-epochs", str(rerank_epochs)] if rerank else []
        print("$ " + " ".join(cmd[2:]), flush=True)
        cpu0 = children_cpu_s()
        adopted = (d / "result.json").exists() and (d / "found.json").exists()
        if not adopted:
            subprocess.run(cmd, check=True)
        res = json.loads((d / "result.json").read_text())
        state["searches"][name] = {**res, "command": " ".join(cmd[2:]), "wall_min": res["seconds"] / 60,
                                   "cpu_min_this_call": None if adopted else (children_cpu_s() - cpu0) / 60}
        print(f"found ({name}): {res['spec']}", flush=True)


def step_pick(state, tables, n: int, seed: int) -> None:
    from mobilenets.search.latency import LatencyTable

    if len(state.get("candidates", [])) >= n:
        return
    loaded = {k: LatencyTable.load(p) for k, p in tables.items()}
    space = next(iter(loaded.values())).space
    rng, picked, tried = random.Random(seed), [], 0
    while len(picked) < n:
        tried += 1
        if tried > 200000:
            raise SystemExit(f"only {len(picked)} of {n} random architectures within +-5 % in every table")
        spec = space.to_spec(space.sample(rng))
        if all(abs(t.predict(spec) / state["targets"][k]["ms"] - 1) <= TOL for k, t in loaded.items()):
            if str(spec) not in picked:
                picked.append(str(spec))
    state["candidates"] = picked
    state["pick"] = {"sampled": tried, "seed": seed}
    print(f"{n} candidates from {tried} random architectures (+-5 % predicted in every table)", flush=True)


def step_measure(state, tables, net_seconds: float, n_random: int) -> None:
    from mobilenets.archs.spec import parse_net
    from mobilenets.search.latency import LatencyTable
    from mobilenets.search.measure import measure_networks

    nets = _networks(state, with_randoms=False) + [(f"cand{i}", s) for i, s in enumerate(state["candidates"])]
    _choose_randoms(state, tables, n_random)   # on a run that timed the candidates before, not on a re-timing
    for name, path in tables.items():
        done = state.setdefault("measured", {}).get(name, {})
        if all(label in done for label, _ in nets):
            continue   # (a network added later, e.g. a one-stage search's, re-times them all in one run)
        table = LatencyTable.load(path)
        ms = [m["ms"] for m in measure_networks([parse_net(s) for _, s in nets], table, net_seconds)]
        state["measured"][name] = {label: {"measured_ms": m, "predicted_ms": table.predict(parse_net(s))}
                                   for (label, s), m in zip(nets, ms)}
        print(f"measured {name}: " + ", ".join(f"{k} {v['measured_ms']:.3f}" for k, v in state["measured"][name].items()),
              flush=True)
    _choose_randoms(state, tables, n_random)


def _choose_randoms(state, tables, n_random: int) -> None:
    """Per table, once (on the first measurement that timed the candidates in its runtime): the
    ``n_random`` random baselines, candidates within +-5 % of MNv4-Conv-S's latency measured in
    that run. Candidates trained already (``state["randoms"]``, for another runtime) come first,
    then the others in the order they were sampled: latency and cost decide, never accuracy.
    Every chosen one joins ``state["randoms"]``, the networks trained."""
    by = state.setdefault("randoms_by_table", {})
    for name in tables:
        m = state.get("measured", {}).get(name, {})
        if name in by or not all(f"cand{i}" in m for i in range(len(state["candidates"]))):
            continue
        ref = m["mnv4"]["measured_ms"]
        inside = [c for i, c in enumerate(state["candidates"]) if abs(m[f"cand{i}"]["measured_ms"] / ref - 1) <= TOL]
        chosen = [c for c in state.get("randoms", []) if c in inside]
        by[name] = (chosen + [c for c in inside if c not in chosen])[:n_random]
        for c in by[name]:
            if c not in state.setdefault("randoms", []):
                state["randoms"].append(c)
        print(f"randoms {name}: candidates {[state['candidates'].index(c) for c in by[name]]} "
              f"(of {len(inside)} within +-5 % measured)", flush=True)
        if len(by[name]) < n_random:
            print(f"warning: only {len(by[name])} candidates within +-5 % measured in {name}; raise --candidates",
                  flush=True)


def _found_table(label: str, names) -> Optional[str]:
    """The table (of ``names``) a ``found_<table>...`` network was searched with; None otherwise."""
    return max((n for n in names if label.startswith(f"found_{n}")), key=len, default=None)


def _randoms_of(state, table: str) -> list[str]:
    """The random baselines of ``table``'s runtime (all of them for a state chosen before
    per-runtime windows)."""
    return state.get("randoms_by_table", {}).get(table, state.get("randoms", []))


def _networks(state, with_randoms: bool = True) -> list[tuple[str, str]]:
    nets = [("mnv4", next(iter(state["targets"].values()))["reference"])]
    for name, res in state.get("searches", {}).items():
        nets.append((f"found_{name}", res["spec"]))
    if with_randoms:
        nets += [(f"random{i}", s) for i, s in enumerate(state.get("randoms", []))]
    return nets


def step_train(state, out: Path, seeds: list[int], jobs: int, state_path: Path) -> None:
    runs = state.setdefault("runs", {})

    def record(key: str, d: Path, wall_s: Optional[float]) -> None:
        hist = json.loads((d / "metrics.json").read_text())["history"]
        runs[key] = {"val_top1": hist[-1]["val_top1"], "epochs": len(hist),
                     "wall_min": wall_s / 60 if wall_s is not None else None,
                     "train_s": sum(h.get("epoch_time_s", 0) for h in hist)}
        _save(state_path, state)
        print(f"{key}: {runs[key]['val_top1']:.2f} % (training {runs[key]['train_s'] / 60:.1f} min)", flush=True)

    def finished(key: str, returncode: int, seconds: float) -> None:
        d = out / "train" / key
        if returncode != 0:
            raise SystemExit(f"training {key} failed (exit {returncode}); see {d}/train.log")
        record(key, d, seconds)

    tasks = []
    for label, spec in _networks(state):
        for seed in seeds:
            key = f"{label}/seed{seed}"
            d = out / "train" / key
            if key in runs:
                continue
            if trained(d):  # finished by an earlier, interrupted call (or by hand)
                record(key, d, None)
            else:
                tasks.append((key, clutter_train_cmd(spec, d, ["--set", f"seed={seed}"]), d / "train.log"))
    run_pool(tasks, jobs, finished)


def _summary(state) -> list[dict]:
    rows = []
    for label, spec in _networks(state):
        accs = [r["val_top1"] for k, r in sorted(state.get("runs", {}).items(), key=lambda kv: kv[0])
                if k.split("/")[0] == label]   # in seed order (runs are recorded as they finish)
        row = {"label": label, "spec": spec, "top1": accs,
               "mean": statistics.mean(accs) if accs else float("nan"),
               "std": statistics.stdev(accs) if len(accs) > 1 else 0.0}
        # a random baseline was timed as the candidate it was picked from
        timed_as = f"cand{state['candidates'].index(spec)}" if label.startswith("random") else label
        for name, m in state.get("measured", {}).items():
            if timed_as in m:
                row[name] = m[timed_as]
        rows.append(row)
    return rows


def step_report(state, out: Path) -> None:
    rows = _summary(state)
    names = list(state.get("measured", {}))
    head = "| network | " + " | ".join(f"{n} measured / predicted (ms)" for n in names) + \
        " | val top-1 mean +- std | per seed | random baseline of |"
    print(head)
    print("|---|" + "---:|" * len(names) + "---:|---|---|")
    for r in rows:
        lat = " | ".join(f"{r[n]['measured_ms']:.3f} / {r[n]['predicted_ms']:.3f}" if n in r else "-" for n in names)
        of = ", ".join(n for n in names if r["label"].startswith("random") and r["spec"] in _randoms_of(state, n))
        print(f"| {r['label']} | {lat} | {r['mean']:.2f} +- {r['std']:.2f} | {', '.join(f'{a:.2f}' for a in r['top1'])} | {of} |")
    ref = next(r for r in rows if r["label"] == "mnv4")
    verdicts = state.setdefault("verdicts", {})
    for r in rows:
        # a found network is compared with the random baselines of its own table's runtime
        table = _found_table(r["label"], names)
        if not (table and r["top1"]):
            continue
        randoms = [x for x in rows if x["spec"] in _randoms_of(state, table) and x["label"].startswith("random")]
        means = [x["mean"] for x in randoms if x["top1"]]
        if not means:
            continue
        med = statistics.median(means)
        verdicts[r["label"]] = {"table": table, "mean": r["mean"], "random_median": med, "randoms": [x["label"] for x in randoms],
                                "best_random": max(means), "mnv4": ref["mean"]}
        print(f"{r['label']}: {r['mean']:.2f} vs the median of {table}'s {len(means)} randoms {med:.2f} "
              f"({'beats' if r['mean'] > med else 'does NOT beat'}), vs MNv4-Conv-S {ref['mean']:.2f} "
              f"({'matches or beats' if r['mean'] >= ref['mean'] else 'below'})")
    state["summary"] = rows
    if names:
        _plot(rows, names, out / "search_goal.png", {n: _randoms_of(state, n) for n in names})


def step_rank(state, out: Path, searches: list[str]) -> None:
    """Does the supernet rank the trained networks as training them does? For each search in
    ``searches``: its final supernet (``search.pt``), every trained network's top-1 with the
    shared weights (BatchNorm re-estimated, as the search evaluates its result) against its mean
    trained top-1, and Spearman's rank correlation."""
    from dataclasses import fields

    from mobilenets.search.latency import rank_correlation
    from mobilenets.search.run import SearchSettings, _Search

    rows = [r for r in _summary(state) if r["top1"]]
    res = state.setdefault("supernet_rank", {})
    for name in searches:
        d = out / f"search_{name}"
        h = json.loads((d / "history.json").read_text())
        known = {f.name for f in fields(SearchSettings)}
        search = _Search(SearchSettings(**{k: v for k, v in h["settings"].items() if k in known}), progress=False)
        if search.load() is None:
            raise SystemExit(f"no search checkpoint in {d}")
        sup = [search.evaluate(search.space.encode(r["spec"])) for r in rows]
        res[name] = {"networks": {r["label"]: {"supernet_top1": 100 * a, "trained_top1": r["mean"]}
                                  for r, a in zip(rows, sup)},
                     "spearman": rank_correlation(sup, [r["mean"] for r in rows])}
        print(f"supernet of {name}: Spearman {res[name]['spearman']:+.2f} with trained top-1 over {len(rows)} networks",
              flush=True)


def step_proxy(state, out: Path, searches: list[str], jobs: int, state_path: Path, seed: int = 0) -> None:
    """How well does the re-ranking's short training rank networks for the full recipe? For each
    search in ``searches`` (run with ``--rerank``): every re-ranked candidate trained with the
    full ``digit_clutter`` recipe (seed ``seed``; a candidate trained already, e.g. the pick, is
    reused), then Spearman's rank correlation between the candidates' held-out top-1 after the
    re-ranking's epochs and their val top-1 after the full recipe, and where the pick lands."""
    from mobilenets.search.latency import rank_correlation

    res = state.setdefault("proxy", {})
    for name in searches:
        if name not in state.get("searches", {}):
            raise SystemExit(f"--proxy-searches: expected one of {sorted(state.get('searches', {}))}, got {name!r}")
        rr = state["searches"][name].get("rerank")
        if not rr:
            raise SystemExit(f"search {name!r} has no re-ranking (run it with --rerank K); searches: {sorted(state['searches'])}")
        # a candidate already trained with this seed (under any label) is not trained again
        known = {spec: out / "train" / f"{label}/seed{seed}" for label, spec in _networks(state)}
        dirs, tasks = [], []
        for i, r in enumerate(rr["results"]):
            d = known.get(r["spec"], out / "proxy" / name / f"cand{i:02d}")
            dirs.append(d)
            if not trained(d):
                tasks.append((f"{name}/cand{i:02d}", clutter_train_cmd(r["spec"], d, ["--set", f"seed={seed}"]),
                              d / "train.log"))

        def finished(key: str, returncode: int, seconds: float) -> None:
            if returncode != 0:
                raise SystemExit(f"training {key} failed (exit {returncode}); see its train.log under {out / 'proxy'}")
            print(f"[{time.strftime('%H:%M:%S')}] {key} trained ({seconds / 60:.1f} min)", flush=True)

        run_pool(tasks, jobs, finished)
        full = [json.loads((d / "metrics.json").read_text())["history"][-1]["val_top1"] for d in dirs]
        short = [r["heldout_top1"] for r in rr["results"]]
        specs = [r["spec"] for r in rr["results"]]
        best = max(range(len(full)), key=full.__getitem__)
        pick = specs.index(rr["pick"])
        res[name] = {"seed": seed, "epochs_short": rr["epochs"], "heldout_top1_short": short, "val_top1_full": full,
                     "spearman": rank_correlation(short, full), "pick": pick, "best_full": best,
                     "pick_rank_full": 1 + sorted(full, reverse=True).index(full[pick])}
        _save(state_path, state)
        print(f"proxy {name}: Spearman {res[name]['spearman']:+.2f} between {rr['epochs']}-epoch held-out and "
              f"full-recipe val top-1 over {len(full)} candidates; the pick ranks {res[name]['pick_rank_full']} "
              f"of {len(full)} after the full recipe ({full[pick]:.2f} %, best {full[best]:.2f} %)", flush=True)
        _plot_proxy(res[name], name, out / f"search_proxy_{name}.png")


def _plot_proxy(r: dict, name: str, path: Path) -> None:
    from mobilenets.analysis.plots import _plt, save_figure

    plt = _plt()

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    x, y = r["heldout_top1_short"], r["val_top1_full"]
    ax.scatter(x, y, color="tab:gray", s=40, label="re-ranked candidate")
    ax.scatter([x[r["pick"]]], [y[r["pick"]]], color="tab:red", marker="*", s=200, label="the pick (best short score)")
    ax.set_xlabel(f"held-out top-1 after {r['epochs_short']} epochs (%, the re-ranking's score)")
    ax.set_ylabel(f"val top-1 after the full recipe (%, seed {r['seed']})")
    ax.set_title(f"{name}: Spearman {r['spearman']:+.2f} over {len(x)} candidates", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    print(f"wrote {save_figure(fig, path)}")


def _plot(rows, names, path: Path, randoms: dict[str, list[str]]) -> None:
    from mobilenets.analysis.plots import _plt, save_figure

    plt = _plt()

    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        for r in rows:
            if name not in r or not r["top1"]:
                continue
            x = r[name]["measured_ms"]
            kind = ("found" if _found_table(r["label"], names) == name else "found_other") if r["label"].startswith("found") \
                else "mnv4" if r["label"] == "mnv4" else "random" if r["spec"] in randoms[name] else "outside"
            style = {"found": ("tab:red", "*", 180), "found_other": ("tab:orange", "*", 120), "mnv4": ("tab:blue", "s", 80),
                     "random": ("tab:gray", "o", 50), "outside": ("silver", "x", 50)}[kind]
            ax.scatter([x] * len(r["top1"]), r["top1"], color=style[0], alpha=0.35, s=18)
            ax.errorbar(x, r["mean"], yerr=r["std"], color=style[0], capsize=3, fmt="none")
            ax.scatter([x], [r["mean"]], color=style[0], marker=style[1], s=style[2],
                       label={"found": f"found with the {name} table", "found_other": "found with another table",
                              "mnv4": "MNv4-Conv-S 0.5",
                              "random": "random (within +-5 % here)", "outside": "random of another runtime"}[kind])
        ref = next((r[name]["measured_ms"] for r in rows if r["label"] == "mnv4" and name in r), None)
        if ref is not None:
            ax.axvspan(ref * (1 - TOL), ref * (1 + TOL), color="tab:blue", alpha=0.06, label="MNv4-Conv-S +-5 %")
        h, lab = ax.get_legend_handles_labels()
        seen = {}
        for hh, ll in zip(h, lab):
            seen.setdefault(ll, hh)
        ax.legend(seen.values(), seen.keys(), fontsize=8)
        ax.set_xlabel(f"measured latency, {name} (ms, b1, 224 px)")
        ax.set_ylabel("digit-clutter val top-1 (%)")
        ax.grid(alpha=0.3)
    fig.suptitle("Found vs MNv4-Conv-S 0.5 vs random\nat the same latency (3 seeds each)", fontsize=10)

    print(f"wrote {save_figure(fig, path)}")


def scaling(out: Path, table: Path, target: float, steps: int) -> None:
    from mobilenets.search.latency import LatencyTable

    t = LatencyTable.load(table)
    base = ["search", "run", "--space", t.space.name, "--width-mult", str(t.space.frame.width_mult), "--table",
            str(table), "--target-ms", str(target), "--data", "digit-clutter", "--steps", str(steps), "--threads", "1",
            "--quiet", "--seed", "0"]
    res = {}
    for procs in (1, 2):
        d = out / f"scaling_{procs}"
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs), "--master-port",
                     "29561", "-m", "mobilenets"] if procs > 1 else EXE)
        cmd = launcher + base + ["--out", str(d)]
        print("$ " + " ".join(cmd[2:]), flush=True)
        cpu0, t0 = children_cpu_s(), time.time()
        subprocess.run(cmd, check=True)
        wall, cpu = time.time() - t0, children_cpu_s() - cpu0
        res[procs] = {"wall_s": wall, "cpu_min": cpu / 60, "steps_per_min": steps / wall * 60,
                      "paths_per_min": steps * procs / wall * 60}
        print(f"{procs} process(es): {json.dumps(res[procs])}", flush=True)
    _save(out / "scaling.json", {"steps": steps, "results": res, "load_avg": os.getloadavg()})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", action="append", default=[], metavar="NAME=TABLE.json",
                    help="a latency table per runtime (each one picks its own random baselines)")
    ap.add_argument("--target", action="append", default=[], metavar="NAME=MS")
    ap.add_argument("--out", required=True)
    ap.add_argument("--search-minutes", type=float, default=25)
    ap.add_argument("--seed", type=int, default=0, help="the searches' seed")
    ap.add_argument("--beta", type=float, default=-0.5,
                    help="the absolute reward's beta (TuNAS's -0.10 let the ORT search land 12.6 %% over its target)")
    ap.add_argument("--one-stage", action="store_true",
                    help="search every decision at once (expansion included) instead of MNv4's two stages")
    ap.add_argument("--search-steps", type=int, default=0,
                    help="fixed search steps (--search-minutes then caps the wall time; 0: as many as the minutes allow)")
    ap.add_argument("--sandwich", action="store_true",
                    help="search run --sandwich: every weight step also trains the whole supernet (suffix _sandwich)")
    ap.add_argument("--rerank", type=int, default=0, metavar="K",
                    help="search run --rerank K: the final K candidates trained alone, the best kept (suffix _rerank)")
    ap.add_argument("--rerank-epochs", type=int, default=2, help="search run --rerank-epochs (default 2)")
    ap.add_argument("--feedback", type=int, default=0, metavar="N",
                    help="search for MNv4-Conv-S's latency measured beside the controller's choice N times per stage")
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--randoms", type=int, default=5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2, help="trainings at a time (one thread each)")
    ap.add_argument("--net-seconds", type=float, default=2.0)
    ap.add_argument("--only", choices=("target", "search", "pick", "measure", "train", "report", "rank", "proxy"),
                    action="append", help="steps to run (rank, proxy: not by default; --rank-searches, --proxy-searches)")
    ap.add_argument("--rank-searches", nargs="+", default=[], metavar="NAME",
                    help="rank: the searches whose supernets rank the trained networks (e.g. ort_onestage_feedback)")
    ap.add_argument("--proxy-searches", nargs="+", default=[], metavar="NAME",
                    help="proxy: the --rerank searches whose candidates are trained with the full recipe "
                         "(e.g. ort_onestage_feedback_rerank)")
    ap.add_argument("--scaling", action="store_true")
    ap.add_argument("--scaling-steps", type=int, default=150)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tables = _tables(args.table)
    if args.scaling:
        name, path = next(iter(tables.items()))
        st = _load(out / "goal.json")
        scaling(out, path, st["targets"][name]["ms"], args.scaling_steps)
        return 0
    given = {}
    for item in args.target:
        k, _, v = item.partition("=")
        given[k] = float(v)
    state_path = out / "goal.json"
    state = _load(state_path)
    from mobilenets.deploy.timing import machine_info

    state.setdefault("machine", machine_info(1))
    steps = args.only or ["target", "search", "pick", "measure", "train", "report"]
    for step in steps:
        if step == "target":
            step_target(state, tables, given)
        elif step == "search":
            step_search(state, tables, out, args.search_minutes, args.seed, args.beta, args.one_stage, args.feedback,
                        args.search_steps, args.sandwich, args.rerank, args.rerank_epochs)
        elif step == "pick":
            step_pick(state, tables, args.candidates, 1234)
        elif step == "measure":
            step_measure(state, tables, args.net_seconds, args.randoms)
        elif step == "train":
            step_train(state, out, args.seeds, args.jobs, state_path)
        elif step == "report":
            step_report(state, out)
        elif step == "rank":
            step_rank(state, out, args.rank_searches)
        elif step == "proxy":
            step_proxy(state, out, args.proxy_searches, args.jobs, state_path)
        _save(state_path, state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
