"""Wall time of the first-hour CLI commands, each run as its own process, best of ``--repeats``:
``python -c "import mobilenets"``, ``mobilenets list`` (classification, ``ssdlite*`` detection,
``lraspp*`` segmentation, and the whole detection / segmentation lists) and ``mobilenets data
digit-scenes --format coco|yolo|voc`` (default sizes: 2000 train + 500 val scenes, 320 px).

    python benchmarks/bench_cli.py                                  # this tree, best of 3
    python benchmarks/bench_cli.py --only list --repeats 5
    git archive <commit> src | tar -x -C /tmp/old                   # an older tree ...
    python benchmarks/bench_cli.py --baseline /tmp/old/src          # ... timed in the same run

With ``--baseline SRC`` every command also runs with ``PYTHONPATH=SRC`` (that tree's
``mobilenets``), alternating with this tree's run, so that both see the same machine load (the
machines these run on are shared: absolute times drift by tens of percent), and the table gets
a ``before`` column and the ratio.

``mobilenets list`` keeps a per-version cache of its counts (:mod:`mobilenets.tasks.listing`):
each ``list`` command is timed *cold* (a fresh, empty ``XDG_CACHE_HOME`` for every run: what a
first run sees) and *warm* (the cache a first run filled). Results: [CLI_SPEED.md](CLI_SPEED.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

LIST = [("import mobilenets", ["-c", "import mobilenets"]),
        ("list", ["-m", "mobilenets", "list"]),
        ("list 'ssdlite*' --task detection", ["-m", "mobilenets", "list", "ssdlite*", "--task", "detection"]),
        ("list 'lraspp*' --task segmentation", ["-m", "mobilenets", "list", "lraspp*", "--task", "segmentation"]),
        ("list --task detection", ["-m", "mobilenets", "list", "--task", "detection"]),
        ("list --task segmentation", ["-m", "mobilenets", "list", "--task", "segmentation"])]
DATA = [(f"data digit-scenes --format {f}", ["-m", "mobilenets", "data", "digit-scenes", "--format", f,
                                             "--out", "{out}"]) for f in ("coco", "yolo", "voc")]


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
    except OSError:
        name = ""
    return f"{name or platform.processor() or 'unknown CPU'}, {os.cpu_count()} CPUs"


def _run(argv: list[str], env: dict, out: str) -> float:
    argv = [sys.executable] + [a.replace("{out}", out) for a in argv]
    t = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return dt


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="runs per command and tree; the best is reported (default 3)")
    p.add_argument("--only", choices=("list", "data"), help="only the import and list commands, or only data")
    p.add_argument("--baseline", metavar="SRC", help="also time the mobilenets in this source folder (PYTHONPATH)")
    p.add_argument("--no-warm", action="store_true", help="list commands cold only")
    p.add_argument("--full-lists", choices=("yes", "no", "only"), default="yes",
                   help="the whole detection / segmentation lists (minutes each before the cache): "
                        "include (default), skip, or time only them")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    trees = [("after", None)] + ([("before", os.path.abspath(args.baseline))] if args.baseline else [])
    work = tempfile.mkdtemp(prefix="bench-cli-")
    results = []
    print(f"{_cpu()}; python {platform.python_version()}; best of {args.repeats}", flush=True)
    try:
        jobs = ([] if args.only == "data" else LIST) + ([] if args.only == "list" else DATA)
        full = [j for j in jobs if j[1][-2:] in (["--task", "detection"], ["--task", "segmentation"])
                and "*" not in " ".join(j[1])]
        jobs = {"yes": jobs, "no": [j for j in jobs if j not in full], "only": full}[args.full_lists]
        for label, cmd in jobs:
            is_list = "list" in cmd
            for mode in (["cold"] + ([] if args.no_warm else ["warm"])) if is_list else [""]:
                times: dict = {t: [] for t, _ in trees}
                caches = {t: tempfile.mkdtemp(dir=work) for t, _ in trees}  # the warm runs' caches
                for r in range(args.repeats):
                    for tree, src in (trees if r % 2 == 0 else trees[::-1]):
                        if mode == "warm" and src and not os.path.exists(
                                os.path.join(src, "mobilenets", "analysis", "listing.py")):
                            continue  # a tree without the cache: warm is cold
                        env = dict(os.environ)
                        if src:
                            env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
                        env["XDG_CACHE_HOME"] = caches[tree] if mode == "warm" else tempfile.mkdtemp(dir=work)
                        if mode == "warm" and r == 0:
                            _run(cmd, env, os.path.join(work, "out"))  # fill the cache
                        times[tree].append(_run(cmd, env, os.path.join(work, "out")))
                row = {"command": label + (f" ({mode})" if mode else "")}
                for tree, _ in trees:
                    if times[tree]:
                        row[tree] = round(min(times[tree]), 2)
                        row[f"{tree}_runs"] = [round(t, 2) for t in times[tree]]
                results.append(row)
                line = f"{row['command']:48s} after {row['after']:7.2f} s"
                if "before" in row:
                    line += f"   before {row['before']:7.2f} s   ratio {row['after'] / row['before']:.2f}"
                print(line, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": _cpu(), "repeats": args.repeats, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
