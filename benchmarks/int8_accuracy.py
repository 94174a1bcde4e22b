"""Issue 26, item 3: INT8 accuracy where it can differ. fp32 vs post-training quantization (PTQ)
vs quantization-aware training (QAT), per family and runtime, on digit-clutter (the built-in task
on which architectures differ; digits is saturated and every INT8 file agrees there).

    python benchmarks/int8_accuracy.py --out /tmp/int8acc                     # every family, ET + LiteRT
    python benchmarks/int8_accuracy.py --out /tmp/int8acc --models mobilenetv4_conv_small --runtimes onnx
    python benchmarks/int8_accuracy.py --out /tmp/int8acc --only report       # redo the table and figure

Each model goes through the commands a user runs (one torch thread each, ``--jobs`` at a time):

1. ``fp32``: ``mobilenets train --data digit-clutter --model M`` (the ``digit_clutter`` recipe,
   epoch-bounded, so the load changes how long it takes, not what it computes).
2. ``ptq``: ``mobilenets export fp32/best.pt --format F --precision int8 --calib digit-clutter``
   (calibrated on ``--calib-count`` training-split images).
3. ``qat``: ``mobilenets train --qat R --pretrained fp32/best.pt`` (QAT's defaults: a tenth of the
   learning rate, a quarter of the epochs, distilling the fp32 checkpoint), then ``mobilenets export
   --qat qat_R/best.pt --format F --precision int8``.
4. ``eval``: the fp32 checkpoint (eager) and every INT8 file, run in its runtime, on the same 2,000
   validation images (whose source digits training never sees; ``--val-images N``: the first N of
   that split, for differences of a few tenths, which 2,000 images do not resolve): top-1 and
   top-1 agreement with fp32; the QAT model itself (fake quantization, eager) beside its file.
5. ``detect`` (with ``--detector CKPT``, an SSDLite trained on digit-scenes): its fp32 and INT8
   network files per runtime (``mobilenets export CKPT --format F [--int8 --calib digit-scenes]``),
   evaluated with ``mobilenets eval CKPT --file FILE`` (COCO mAP on the 500 validation scenes).
6. ``calib`` (with ``--calib-methods`` / ``--calib-counts``): the calibration choices, PTQ of each
   fp32 checkpoint with each method (128 images) and each image count (default method).
7. ``report``: OUT/int8_accuracy.md (table; goal: QAT within 0.5 points of fp32 and PTQ within
   1.5, everywhere it converts) and OUT/int8_accuracy.png.

State is in OUT/int8_accuracy.json after every step; a rerun skips what is done and an
interrupted training resumes from its last.pt. A step that fails (a family that does not
convert) is recorded with its error and reported as such; the others go on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path
from typing import Optional

from goal_runs import EXE, children_cpu_s, clutter_train_cmd, run_pool, trained

DEFAULT_MODELS = ("mobilenetv1_100", "mobilenetv2_100", "mobilenetv3_large_100", "mobilenetv3_small_100",
                  "mobilenetv4_conv_small", "mobilenetv4_hybrid_medium", "mobileformer_96m")
SUFFIX = {"executorch": "pte", "litert": "tflite", "onnx": "onnx"}
FORMAT = {"executorch": "executorch", "litert": "tflite", "onnx": "onnx"}
#: the issue's goal: points of top-1 an INT8 file may lose against fp32
GOAL = {"ptq": 1.5, "qat": 0.5}


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(path)


def step_train(state, out: Path, models, runtimes, jobs: int, save, qat: bool) -> None:
    """fp32 trainings (``qat`` False) or the QAT fine-tunes of every trained fp32 model."""
    runs = state.setdefault("runs", {})
    tasks = []
    for m in models:
        fp32 = out / m / "fp32"
        if not qat:
            if not trained(fp32):
                tasks.append((f"{m}/fp32", clutter_train_cmd(m, fp32, []), fp32 / "train.log"))
            continue
        if not trained(fp32):
            continue
        for r in runtimes:
            d = out / m / f"qat_{r}"
            key = f"{m}/qat_{r}"
            if not trained(d) and runs.get(key, {}).get("error") is None:
                tasks.append((key, clutter_train_cmd(m, d, ["--qat", r, "--pretrained", str(fp32 / "best.pt")]),
                              d / "train.log"))

    def finished(key, rc, seconds):
        runs[key] = {"wall_min": round(seconds / 60, 2)}
        if rc != 0:
            runs[key]["error"] = f"exit {rc}: see {out / key / 'train.log'}"
        save()
        print(f"{key}: {'done' if rc == 0 else runs[key]['error']} ({seconds / 60:.1f} min)", flush=True)

    run_pool(tasks, jobs, finished)


def step_export(state, out: Path, models, runtimes, calib_count: int, save) -> None:
    """The PTQ export of each fp32 checkpoint and the export of each QAT checkpoint, per runtime."""
    files = state.setdefault("files", {})
    for m in models:
        for r in runtimes:
            for kind in ("ptq", "qat"):
                key = f"{m}/{kind}_{r}"
                ck = out / m / ("fp32" if kind == "ptq" else f"qat_{r}") / "best.pt"
                path = out / m / f"{kind}_{r}.{SUFFIX[r]}"
                if key in files or not ck.exists() or not trained(ck.parent):
                    continue
                src = [str(ck)] if kind == "ptq" else ["--qat", str(ck)]
                cmd = EXE + ["export", *src, "--format", FORMAT[r], "--precision", "int8", "--calib", "digit-clutter",
                             "--calib-count", str(calib_count), "--out", str(path)]
                print("$ " + " ".join(cmd[2:]), flush=True)
                t, cpu = time.time(), children_cpu_s()
                p = subprocess.run(cmd, capture_output=True, text=True)
                files[key] = {"path": str(path), "seconds": round(time.time() - t, 1),
                              "cpu_s": round(children_cpu_s() - cpu, 1),
                              "summary": (p.stdout.strip().splitlines() or [""])[-1]}
                if p.returncode != 0:
                    files[key]["error"] = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
                print(f"{key}: {files[key].get('error') or files[key]['summary']}", flush=True)
                save()


def _val_images(out: Path, model: str, n: Optional[int] = None):
    """The validation images and labels the fp32 run was validated on (its recipe's), or the
    first ``n`` of that split (digit-clutter draws item ``i`` the same for every ``n``: the first
    2,000 are the recipe's)."""
    import torch

    from mobilenets import model_from_checkpoint
    from mobilenets.train import build_datasets
    from mobilenets.train.recipe import Recipe

    _, info = model_from_checkpoint(out / model / "fp32" / "best.pt")
    recipe = Recipe.from_dict(info["recipe"])
    val = build_datasets(recipe if n is None else recipe.replace(scene_val_images=n)).val
    x = torch.stack([val[i][0] for i in range(len(val))])
    y = torch.tensor([int(val[i][1]) for i in range(len(val))])
    return x, y


def _top1(logits, y) -> float:
    import torch

    return 100.0 * float((torch.as_tensor(logits).argmax(1) == y).double().mean())


def _eager(model, x, bs: int = 250):
    import torch

    with torch.no_grad():
        return torch.cat([model(x[i:i + bs]) for i in range(0, len(x), bs)])


def _run_file(path, x):
    import torch

    from mobilenets.deploy import onnx_logits, pte_logits, tflite_logits

    run = {".pte": pte_logits, ".tflite": tflite_logits, ".onnx": onnx_logits}[Path(path).suffix]
    return torch.as_tensor(run(path, x))


def step_calib(state, out: Path, models, runtimes, methods, counts, save) -> None:
    """Issue 26 item 2's calibration choices on the same data: PTQ of each fp32 checkpoint with
    each ``--calib-method`` (at the default count) and with each ``--calib-count`` (default method),
    per runtime, every file evaluated on the validation images (top-1, agreement with fp32)."""
    from mobilenets import model_from_checkpoint
    from mobilenets.deploy import agreement

    cal = state.setdefault("calibration", {})
    for m in models:
        if not trained(out / m / "fp32"):
            continue
        todo = {}
        for r in runtimes:
            default = "minmax" if r == "onnx" else "mse"
            variants = {(meth, 128) for meth in methods} | {(default, c) for c in counts}
            for meth, count in sorted(variants):
                key = f"{m}/{r}/{meth}/{count}"
                if key in cal:
                    continue
                path = out / m / "calib" / f"{r}_{meth}_{count}.{SUFFIX[r]}"
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    cmd = EXE + ["export", str(out / m / "fp32" / "best.pt"), "--format", FORMAT[r], "--precision",
                                 "int8", "--calib", "digit-clutter", "--calib-count", str(count), "--calib-method",
                                 meth, "--out", str(path)]
                    print("$ " + " ".join(cmd[2:]), flush=True)
                    p = subprocess.run(cmd, capture_output=True, text=True)
                    if p.returncode != 0:
                        cal[key] = {"error": (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]}
                        save()
                        continue
                todo[key] = path
        if not todo:
            continue
        x, y = _val_images(out, m)
        model, _ = model_from_checkpoint(out / m / "fp32" / "best.pt")
        ref = _eager(model, x)
        for key, path in todo.items():
            logits = _run_file(path, x)
            cal[key] = {"top1": _top1(logits, y), "agree": 100.0 * agreement(logits, ref), "fp32": _top1(ref, y)}
            print(f"{key}: top-1 {cal[key]['top1']:.2f} (fp32 {cal[key]['fp32']:.2f}), agreement "
                  f"{cal[key]['agree']:.2f} %", flush=True)
            save()


def step_eval(state, out: Path, models, runtimes, save, val_images: Optional[int] = None) -> None:
    from mobilenets import model_from_checkpoint
    from mobilenets.deploy import agreement
    from mobilenets.tasks.qat import load_qat_checkpoint

    acc = state.setdefault("accuracy", {})
    files = state.get("files", {})
    top1, eager = _top1, _eager

    for m in models:
        if not trained(out / m / "fp32"):
            continue
        if acc.get(m, {}).get("val_images") != val_images:
            acc[m] = {}  # measured on another number of images (either way): measured again
        todo = [f"{k}_{r}" for r in runtimes for k in ("ptq", "qat")
                if f"{m}/{k}_{r}" in files and "error" not in files[f"{m}/{k}_{r}"]
                and f"{k}_{r}" not in acc.get(m, {})]
        todo += [f"qat_model_{r}" for r in runtimes if trained(out / m / f"qat_{r}")
                 and f"qat_model_{r}" not in acc.get(m, {})]
        if "fp32" in acc.get(m, {}) and not todo:
            continue
        x, y = _val_images(out, m, val_images)
        model, _ = model_from_checkpoint(out / m / "fp32" / "best.pt")
        ref = eager(model, x)
        row = acc.setdefault(m, {})
        row["fp32"], row["val_images"] = {"top1": top1(ref, y), "n": len(y)}, val_images
        for key in todo:
            if key.startswith("qat_model_"):
                qat, _ = load_qat_checkpoint(out / m / f"qat_{key.rsplit('_', 1)[1]}" / "best.pt")
                logits = eager(qat, x)
            else:
                logits = _run_file(files[f"{m}/{key}"]["path"], x)
            row[key] = {"top1": top1(logits, y), "agree": 100.0 * agreement(logits, ref)}
            print(f"{m} {key}: top-1 {row[key]['top1']:.2f} (fp32 {row['fp32']['top1']:.2f}), "
                  f"agreement {row[key]['agree']:.2f} %", flush=True)
            save()
        save()


def step_detect(state, out: Path, detector: Path, runtimes, calib_count: int, save) -> None:
    """SSDLite on digit-scenes: the fp32 checkpoint's COCO mAP (eager), and each runtime's fp32 and
    INT8 (PTQ, calibrated on digit-scenes training scenes) network file evaluated with ``mobilenets
    eval CKPT --file FILE`` (decode + NMS on the host), on the same 500 validation scenes."""
    det = state.setdefault("detection", {"checkpoint": str(detector)})

    def evaluate(key, extra):
        if key in det:
            return
        cmd = EXE + ["eval", str(detector), "--no-progress"] + extra
        print("$ " + " ".join(cmd[2:]), flush=True)
        p = subprocess.run(cmd, capture_output=True, text=True, check=True)
        line = p.stdout.splitlines()[0]
        vals = dict(zip(line.split()[-8::2], (float(v) for v in line.split()[-7::2])))
        det[key] = {"map": vals["mAP"], "map50": vals["mAP50"], "map75": vals["mAP75"], "line": line}
        print(f"{key}: mAP {det[key]['map']:.4f} mAP50 {det[key]['map50']:.4f}", flush=True)
        save()

    evaluate("fp32", [])
    for r in runtimes:
        if r == "onnx":
            continue  # an ONNX detector file holds decode + NMS and is checked at export
        for prec in ("fp32", "int8"):
            key = f"{prec}_{r}"
            path = out / "detector" / f"{key}.{SUFFIX[r]}"
            if key not in det.get("files", {}):
                path.parent.mkdir(parents=True, exist_ok=True)
                q = ["--int8", "--calib", "digit-scenes", "--calib-count", str(calib_count)] if prec == "int8" else []
                cmd = EXE + ["export", str(detector), "--format", FORMAT[r], "--out", str(path)] + q
                print("$ " + " ".join(cmd[2:]), flush=True)
                t = time.time()
                p = subprocess.run(cmd, capture_output=True, text=True, check=True)
                det.setdefault("files", {})[key] = {"path": str(path), "summary": p.stdout.strip().splitlines()[-1],
                                                    "seconds": round(time.time() - t, 1)}
                save()
            evaluate(key, ["--file", str(path)])


def _cell(row: dict, key: str, fp32: float) -> str:
    if key not in row:
        return "-"
    d = fp32 - row[key]["top1"]
    return f"{row[key]['top1']:.2f} ({-d:+.2f})"


def step_report(state, out: Path, models, runtimes) -> None:
    acc, files, runs = state.get("accuracy", {}), state.get("files", {}), state.get("runs", {})
    lines = ["| model | fp32 | " + " | ".join(f"{k.upper()} {r}" for r in runtimes for k in ("ptq", "qat")) + " |",
             "|---|---:|" + "---:|" * (2 * len(runtimes))]
    met = {k: [] for k in GOAL}
    for m in models:
        row = acc.get(m)
        if not row:
            continue
        fp32 = row["fp32"]["top1"]
        cells = []
        for r in runtimes:
            for k in ("ptq", "qat"):
                key = f"{k}_{r}"
                err = files.get(f"{m}/{key}", {}).get("error") or runs.get(f"{m}/qat_{r}" if k == "qat" else "",
                                                                           {}).get("error")
                if key in row:
                    met[k].append(fp32 - row[key]["top1"] <= GOAL[k])
                    cells.append(f"{_cell(row, key, fp32)}, {row[key]['agree']:.1f} %")
                else:
                    cells.append("does not convert" if err else "-")
        lines.append(f"| `{m}` | {fp32:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "Cells: top-1 % of the INT8 file run in its runtime (change vs fp32, points), top-1 agreement "
              "with fp32.", ""]
    for k, v in met.items():
        lines.append(f"- {k.upper()} within {GOAL[k]} points of fp32: {sum(v)} of {len(v)} files")
    qm = [(m, r, acc[m][f"qat_model_{r}"], acc[m].get(f"qat_{r}")) for m in models for r in runtimes
          if f"qat_model_{r}" in acc.get(m, {})]
    if qm:
        lines += ["", "The QAT model itself (fake quantization, eager) beside its file: "
                  + "; ".join(f"{m} {r} {q['top1']:.2f} / {f['top1']:.2f}" if f else f"{m} {r} {q['top1']:.2f} / -"
                              for m, r, q, f in qm)]
    cal = state.get("calibration")
    if cal:
        lines += ["", "Calibration choices (PTQ, the same fp32 checkpoints and validation images): top-1 % of the "
                  "file (change vs fp32, points), agreement with fp32.", "",
                  "| model | runtime | method | images | top-1 | agreement |", "|---|---|---|---:|---:|---:|"]
        for key in sorted(cal, key=lambda k: (k.split("/")[0], k.split("/")[1], k.split("/")[2], int(k.split("/")[3]))):
            m, r, meth, count = key.split("/")
            v = cal[key]
            if "error" in v:
                lines.append(f"| `{m}` | {r} | {meth} | {count} | does not convert | |")
            else:
                lines.append(f"| `{m}` | {r} | {meth} | {count} | {v['top1']:.2f} ({v['top1'] - v['fp32']:+.2f}) | "
                             f"{v['agree']:.1f} % |")
    det = state.get("detection")
    if det and "fp32" in det:
        lines += ["", f"SSDLite on digit-scenes ({det['checkpoint']}), COCO mAP@[.5:.95] / mAP50 on the 500 "
                  "validation scenes, the network file run in its runtime (decode + NMS on the host):", "",
                  "| file | mAP | mAP50 | mAP75 | change in mAP (points) |", "|---|---:|---:|---:|---:|",
                  f"| eager fp32 | {det['fp32']['map']:.4f} | {det['fp32']['map50']:.4f} | {det['fp32']['map75']:.4f} | |"]
        for key, v in det.items():
            if key in ("fp32", "checkpoint", "files"):
                continue
            lines.append(f"| {key.replace('_', ' ')} | {v['map']:.4f} | {v['map50']:.4f} | {v['map75']:.4f} | "
                         f"{100 * (v['map'] - det['fp32']['map']):+.2f} |")
    text = "\n".join(lines) + "\n"
    (out / "int8_accuracy.md").write_text(text)
    print(text, flush=True)
    _plot(acc, models, runtimes, out / "int8_accuracy.png")


def _plot(acc, models, runtimes, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    ms = [m for m in models if m in acc]
    if not ms:
        return
    keys = [f"{k}_{r}" for r in runtimes for k in ("ptq", "qat")]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(ms)), 4))
    w = 0.8 / len(keys)
    floor = -4.0  # a collapse would hide every other bar: clipped, its value written on it
    for j, key in enumerate(keys):
        drops = [acc[m][key]["top1"] - acc[m]["fp32"]["top1"] if key in acc[m] else float("nan") for m in ms]
        xs = [i + (j - (len(keys) - 1) / 2) * w for i in range(len(ms))]
        ax.bar(xs, [max(d, floor) for d in drops], w, label=key.replace("_", " ").replace("ptq", "PTQ").replace("qat", "QAT"))
        for xi, d in zip(xs, drops):
            if d < floor:
                ax.text(xi, floor + 0.1, f"{d:.0f}", rotation=90, ha="center", va="bottom", fontsize=7)
    for k, g in GOAL.items():
        ax.axhline(-g, ls="--", lw=0.8, color="grey")
        ax.text(len(ms) - 0.5, -g, f"{k.upper()} goal (-{g})", fontsize=7, va="top", ha="right", color="grey")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylim(floor, 2.0)
    ax.set_xticks(range(len(ms)), [m.replace("mobilenet", "mn") for m in ms], rotation=20, fontsize=8)
    ax.set_ylabel("INT8 top-1 - fp32 top-1 (points)")
    ns = sorted({acc[m]["fp32"].get("n", 2000) for m in ms})
    ax.set_title(f"INT8 files vs fp32 on digit-clutter ({' / '.join(f'{n:,}' for n in ns)} validation images)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated registry names or specs")
    ap.add_argument("--runtimes", default="executorch,litert", help="comma-separated: executorch, litert, onnx")
    ap.add_argument("--calib-count", type=int, default=128, help="PTQ calibration images (training split)")
    ap.add_argument("--jobs", type=int, default=2, help="trainings at a time (one thread each)")
    ap.add_argument("--detector", type=Path, help="an SSDLite checkpoint trained on digit-scenes (mobilenets train "
                    "--task detect): its fp32 and INT8 network files' mAP (step detect)")
    ap.add_argument("--calib-methods", default="", help="step calib: comma-separated --calib-method values, each "
                    "at 128 images (e.g. mse,minmax,percentile)")
    ap.add_argument("--calib-counts", default="", help="step calib: comma-separated --calib-count values, each with "
                    "the runtime's default method (e.g. 32,128,512)")
    ap.add_argument("--val-images", type=int, help="step eval: evaluate on the first N images of the validation "
                    "split (default: the recipe's 2,000; more narrows the noise of a difference of a few tenths)")
    ap.add_argument("--only", action="append", choices=("fp32", "qat", "export", "eval", "calib", "detect", "report"),
                    help="steps to run (default: all)")
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    runtimes = [r for r in args.runtimes.split(",") if r]
    bad = [r for r in runtimes if r not in SUFFIX]
    if bad:
        ap.error(f"--runtimes: expected executorch, litert or onnx, got {', '.join(bad)}")
    if args.val_images is not None and args.val_images < 1:
        ap.error(f"--val-images: expected a number of images >= 1, got {args.val_images}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "int8_accuracy.json"
    state = json.loads(path.read_text()) if path.exists() else {}
    state["command"] = "python benchmarks/int8_accuracy.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:])

    def save():
        _save(path, state)

    steps = args.only or ["fp32", "qat", "export", "eval", "report"]
    if "fp32" in steps:
        step_train(state, args.out, models, runtimes, args.jobs, save, qat=False)
    if "qat" in steps:
        step_train(state, args.out, models, runtimes, args.jobs, save, qat=True)
    if "export" in steps:
        step_export(state, args.out, models, runtimes, args.calib_count, save)
    if "eval" in steps:
        step_eval(state, args.out, models, runtimes, save, args.val_images)
    if "calib" in steps or (not args.only and (args.calib_methods or args.calib_counts)):
        step_calib(state, args.out, models, runtimes, [m for m in args.calib_methods.split(",") if m],
                   [int(c) for c in args.calib_counts.split(",") if c], save)
    if args.detector and ("detect" in steps or not args.only):
        step_detect(state, args.out, args.detector, runtimes, args.calib_count, save)
    if "report" in steps:
        step_report(state, args.out, models, runtimes)
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
