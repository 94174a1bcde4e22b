"""The deployment matrix: family x runtime (eager, ONNX Runtime, ExecuTorch/XNNPACK, LiteRT) x
precision (fp32, INT8), each cell "verified / latency ratio / agreement", generated, not typed.

Per family, one digits-trained checkpoint (``--checkpoint NAME=PATH``, or trained here with
``--train-epochs N``):

* **verified**: the file was written by our exporter and RUN in its runtime: fp32 within 1e-4
  relative of eager (``ok``), INT8 running with integer kernels; ``fallback`` where some ops are
  outside XNNPACK / LiteRT builtins; ``-`` not built (the note says why);
* **latency ratio**: median latency / ONNX Runtime fp32 latency of the same model, batch 1,
  224x224, ``--threads`` threads, all paths of a model timed interleaved in ONE run
  (:func:`mobilenets.deploy.timing.interleaved_timings`), with the checkpoint's weights;
* **agreement**: top-1 agreement with fp32 eager on the digits validation split (359 images) at
  the checkpoint's training size (64 px), INT8 calibrated on 128 training images.

    flock /work/bench.lock python benchmarks/mobile_matrix.py --train-epochs 20 --out benchmarks/out/mobile
    python benchmarks/mobile_matrix.py --checkpoint mobilenetv4_conv_small=runs/<run>/best.pt --families mobilenetv4_conv_small

``--readme benchmarks/MOBILE.md`` replaces the block between ``<!-- mobile-matrix:begin -->`` and
``<!-- mobile-matrix:end -->`` with the table; ``--markdown FILE`` writes table + details.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import mobilenets
from mobilenets.deploy import agreement
from mobilenets.deploy.bench import build_paths
from mobilenets.deploy.timing import interleaved_timings, machine_info

# MobileNetV5: its base (82 M parameters; the 300M's 294 M make a 1.1 GiB file per runtime), whose
# ExecuTorch and LiteRT fp32 files lower fully and match eager (~3e-6; benchmarks/MOBILE.md)
FAMILIES = ["mobilenetv1_100", "mobilenetv2_100", "mobilenetv3_large_100", "mobilenetv4_conv_small",
            "mobilenetv4_conv_medium", "mobilenetv4_hybrid_medium", "mobileformer_96m", "mobilenetv5_base"]
COLUMNS = [("eager", "eager", "fp32"), ("ort_fp32", "ONNX Runtime", "fp32"), ("ort_int8", "ONNX Runtime", "INT8"),
           ("et_xnnpack_fp32", "ExecuTorch", "fp32"), ("et_xnnpack_int8", "ExecuTorch", "INT8"),
           ("litert_fp32", "LiteRT", "fp32"), ("litert_int8", "LiteRT", "INT8")]
BEGIN, END = "<!-- mobile-matrix:begin -->", "<!-- mobile-matrix:end -->"


def log(s: str) -> None:
    print(s, file=sys.stderr, flush=True)


def get_checkpoint(name: str, args) -> Path:
    given = dict(c.split("=", 1) for c in args.checkpoint or [])
    if name in given:
        return Path(given[name])
    out = Path(args.out) / name
    if (out / "best.pt").is_file():
        return out / "best.pt"
    if not args.train_epochs:
        raise SystemExit(f"no checkpoint for {name}: pass --checkpoint {name}=PATH or --train-epochs N")
    from mobilenets.train import get_recipe, train
    recipe = get_recipe("digits")
    recipe.model, recipe.epochs = name, args.train_epochs
    log(f"{name}: training on digits for {args.train_epochs} epochs -> {out}")
    res = train(recipe, out, progress=False, log=lambda s: None)
    log(f"{name}: best val top-1 {res.best_top1:.2f}%")
    return out / "best.pt"


def digits_val(recipe) -> tuple[torch.Tensor, torch.Tensor]:
    from mobilenets.train import build_datasets
    items = list(build_datasets(recipe).val)
    return torch.stack([img for img, _ in items]), torch.tensor([int(y) for _, y in items])


def accuracy_cells(model, recipe, workdir: Path, only=None) -> dict:
    """``path -> (verified, agreement, note)`` at the training size, on the digits validation split
    (``only``: just these paths, and no eager cell)."""
    from mobilenets.deploy import (calibration_batches, export_executorch, export_onnx, export_tflite, onnx_logits,
                                   pte_logits, quantize_onnx, tflite_logits)

    size = (recipe.img_size, recipe.img_size)
    val, labels = digits_val(recipe)
    with torch.no_grad():
        fp32 = model(val)
    calib = calibration_batches("digits", count=128, input_size=size)
    top1 = float((fp32.argmax(1) == labels).double().mean())
    cells = {"eager": ("ok", 1.0, f"fp32 val top-1 {100 * top1:.1f}% ({len(val)} images)")}
    jobs = {
        "ort_fp32": lambda f: (export_onnx(model, f, input_size=size, dynamic_batch=True), onnx_logits(f, val)),
        "ort_int8": lambda f: (quantize_onnx(model, f, calib, input_size=size, dynamic_batch=True), onnx_logits(f, val)),
        "et_xnnpack_fp32": lambda f: (export_executorch(model, f, input_size=size, allow_fallback=True), pte_logits(f, val)),
        "et_xnnpack_int8": lambda f: (export_executorch(model, f, input_size=size, calib=calib, allow_fallback=True),
                                      pte_logits(f, val)),
        "litert_fp32": lambda f: (export_tflite(model, f, input_size=size, allow_fallback=True), tflite_logits(f, val)),
        "litert_int8": lambda f: (export_tflite(model, f, input_size=size, calib=calib, allow_fallback=True),
                                  tflite_logits(f, val)),
    }
    if only is not None:
        cells, jobs = {}, {p: j for p, j in jobs.items() if p in only}
    suffix = {"ort": ".onnx", "et": ".pte", "litert": ".tflite"}
    for path, job in jobs.items():
        f = workdir / f"{path}{suffix[path.split('_')[0]]}"
        t0 = time.time()
        try:
            res, out = job(f)
        except Exception as e:  # noqa: BLE001 - a cell that fails is reported, not fatal
            cells[path] = ("failed", None, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")
            log(f"  {path}: {cells[path][2]}")
            continue
        outside = getattr(res, "outside", {})
        verified = "fallback" if outside else "ok"
        cells[path] = (verified, agreement(out, fp32), "; ".join(outside) if outside else "")
        log(f"  {path}: {verified}, agreement {100 * cells[path][1]:.1f}% ({time.time() - t0:.0f} s)")
    return cells


def latency_cells(name: str, model, threads: int, size: int, seconds: float) -> tuple[dict, dict]:
    paths = [c[0] for c in COLUMNS]
    built = build_paths(name, 1, size, threads, paths, calib="digits", calib_count=128, model=model, log=log)
    try:
        res = interleaved_timings(built.fns, None, 10, seconds)
    finally:
        built.temp_dir.cleanup()
    return {p: r["ms"] for p, r in res.items()}, built.notes


def render(results: dict, meta: dict) -> str:
    head = "| family (model) | " + " | ".join(f"{rt} {prec}" for _, rt, prec in COLUMNS) + " |"
    lines = [head, "|---|" + "---|" * len(COLUMNS)]
    for name, r in results.items():
        base = r["ms"].get("ort_fp32")
        cells = []
        for p, _, _ in COLUMNS:
            v, agree, note = r["acc"].get(p, ("-", None, ""))
            ms = r["ms"].get(p)
            ratio = f"{ms / base:.2f}x" if ms and base else "-"
            cells.append(f"{v} / {ratio} / {'-' if agree is None else f'{100 * agree:.1f}%'}")
        fam = mobilenets.get_entry(name).family
        lines.append(f"| {fam} (`{name}`) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", nargs="+", default=FAMILIES)
    ap.add_argument("--checkpoint", action="append", help="NAME=PATH of a digits-trained checkpoint")
    ap.add_argument("--train-epochs", type=int, default=0, help="train missing checkpoints for N epochs")
    ap.add_argument("--out", default="benchmarks/out/mobile", help="trained checkpoints and exported files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=224, help="latency input size")
    ap.add_argument("--seconds", type=float, default=4.0, help="timing budget per path")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--latency-from", help="take the latencies from a `mobilenets bench --json` file instead "
                                           "(batch 1; those paths were timed interleaved in that run)")
    ap.add_argument("--accuracy-from", help="take the verified / agreement cells from an earlier run's --json file "
                                            "(e.g. one made with --skip-latency while the machine was busy) and "
                                            "only time the paths")
    ap.add_argument("--redo-accuracy", nargs="+", default=[], choices=[c[0] for c in COLUMNS], metavar="PATH",
                    help="with --accuracy-from: measure these paths' cells again (e.g. after an exporter change)")
    ap.add_argument("--json", help="write every figure to this file")
    ap.add_argument("--markdown", help="write the table and details to this file")
    ap.add_argument("--readme", help="replace the mobile-matrix block of this README")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from mobilenets.factory import model_from_checkpoint

    meta = machine_info(args.threads)
    earlier = json.loads(Path(args.accuracy_from).read_text())["results"] if args.accuracy_from else {}
    results = {}
    for name in args.families:
        ckpt = get_checkpoint(name, args)
        model, info = model_from_checkpoint(ckpt)
        model.eval()
        from mobilenets.train import Recipe
        recipe = Recipe(**{k: v for k, v in info["recipe"].items() if k in Recipe.__dataclass_fields__}) \
            if isinstance(info.get("recipe"), dict) else info["recipe"]
        work = Path(args.out) / name / "files"
        work.mkdir(parents=True, exist_ok=True)
        if name in earlier:
            acc = {p: tuple(cell) for p, cell in earlier[name]["acc"].items()}
            log(f"{name}: verified / agreement cells from {args.accuracy_from}")
            if args.redo_accuracy:
                log(f"{name}: {', '.join(args.redo_accuracy)} again at {recipe.img_size} px")
                acc.update(accuracy_cells(model, recipe, work, only=set(args.redo_accuracy)))
        else:
            log(f"{name}: accuracy at {recipe.img_size} px")
            acc = accuracy_cells(model, recipe, work)
        if args.latency_from:
            rows = json.loads(Path(args.latency_from).read_text())["rows"]
            ms = {r["path"]: r["ms"] for r in rows if r["model"] == name and r["batch"] == 1 and r["ms"]}
            notes = {r["path"]: r["note"] for r in rows if r["model"] == name and r["batch"] == 1 and r["note"]}
        elif args.skip_latency:
            ms, notes = {}, {}
        else:
            ms, notes = latency_cells(name, model, args.threads, args.size, args.seconds)
        results[name] = {"acc": acc, "ms": ms, "notes": notes, "checkpoint": str(ckpt)}
        log(f"{name}: " + ", ".join(f"{p} {v:.2f} ms" for p, v in ms.items()))
    table = render(results, meta)
    print(table)
    goals = []
    for name, r in results.items():
        ms = r["ms"]
        for q, f, what in (("et_xnnpack_int8", "et_xnnpack_fp32", "ExecuTorch"), ("litert_int8", "litert_fp32", "LiteRT"),
                           ("ort_int8", "ort_fp32", "ONNX Runtime")):
            if q in ms and f in ms:
                goals.append(f"- `{name}` {what} INT8/fp32 latency {ms[q] / ms[f]:.2f} "
                             f"(goal <= 0.5: {'met' if ms[q] / ms[f] <= 0.5 else 'not met'}); agreement "
                             f"{100 * (r['acc'].get(q, (0, 0))[1] or 0):.1f}%")
        if "et_xnnpack_fp32" in ms and "ort_fp32" in ms:
            goals.append(f"- `{name}` ExecuTorch fp32 / ONNX Runtime fp32 latency {ms['et_xnnpack_fp32'] / ms['ort_fp32']:.2f}")
    print("\n".join(goals))
    stamp = (f"{meta['cpu']}, {args.threads} threads, torch {meta['torch']}, {meta['date']}; batch 1, "
             f"latency at {args.size}x{args.size}, agreement at the training size on the digits validation split")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": meta, "results": results}, indent=1, default=str))
    if args.markdown:
        notes = [f"- `{n}` {p}: {v[2]}" for n, r in results.items() for p, v in r["acc"].items() if v[2]]
        notes += [f"- `{n}` {p}: {t}" for n, r in results.items() for p, t in r["notes"].items()]
        Path(args.markdown).write_text(f"{stamp}\n\n{table}\n\n" + "\n".join(goals) + "\n\n" + "\n".join(notes) + "\n")
    if args.readme:
        text = Path(args.readme).read_text()
        if BEGIN not in text or END not in text:
            raise SystemExit(f"{args.readme} has no {BEGIN} ... {END} block")
        pre, rest = text.split(BEGIN, 1)
        post = rest.split(END, 1)[1]
        Path(args.readme).write_text(f"{pre}{BEGIN}\n{stamp}.\n\n{table}\n{END}{post}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
