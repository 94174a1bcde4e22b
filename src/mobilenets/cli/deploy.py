"""``mobilenets export`` and ``mobilenets bench``: deployment from the command line.

Both take the shared ``--input-size`` (:mod:`mobilenets.cli.common`; ``bench`` square only, its
old ``--size N`` an alias); ``bench`` also ``--batch-size B [B ...]`` (alias ``--batch``) and
``--json [FILE]``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ..deploy.runtimes import runtime_for
from ..models.info import model_info
from ..tasks.base import EXPORT_FORMATS as FORMATS
from .common import (UserError, add_batch_size, add_input_size, add_json, emit_json, json_only,
                        square_size)


def load_for_export(source: str, model_name: str | None = None, num_classes: int | None = None,
                    weights: str | None = None):
    """``(model in eval mode, name)`` for a registry name of any task (optionally with
    ``weights``), a training checkpoint of any task, or a plain weights file with ``model_name``.
    The model's :class:`~mobilenets.models.info.ModelInfo` says how to feed it (a checkpoint's:
    the recipe's size and normalization)."""
    import mobilenets
    from ..models.registry import is_model

    if is_model(source):
        model = mobilenets.create_model(source, num_classes=num_classes, pretrained=weights)
        return model.eval(), source
    path = Path(source)
    if not path.exists():
        from ..weights.io import SAFETENSORS_SUFFIXES, TORCH_SUFFIXES
        if path.suffix.lower() in TORCH_SUFFIXES + SAFETENSORS_SUFFIXES or len(path.parts) > 1:
            raise FileNotFoundError(f"unknown model {source!r}, and no such checkpoint file: {path}")
        mobilenets.get_entry(source)  # not a file either: UnknownModelError naming close matches
    if weights:
        raise UserError("--weights goes with a model name; a checkpoint path already holds weights")
    from ..tasks.checkpoint import checkpoint_task

    if path.is_file() and checkpoint_task(path) not in (None, "classify"):
        model, info = mobilenets.model_from_checkpoint(path)  # a detection / segmentation run
        return model, info["model"] or path.stem
    from ..factory import model_from_checkpoint
    model, info = model_from_checkpoint(path, model_name=model_name, num_classes=num_classes)
    return model, info["recipe"].get("model") or model_name or path.stem


def calibration_for(args: argparse.Namespace, model, size: tuple):
    """The ``--calib`` images for an INT8 export (:class:`~.calibration.CalibrationSet`: the
    images really used, and the unreadable files skipped), as the model's task prepares them
    (:meth:`~mobilenets.tasks.base.Task.calibration`: a classifier's through its evaluation
    transform, a detector's through its own)."""
    from ..train.task import get_task

    return get_task(model_info(model).task).calibration(args.calib, model, size, args.calib_count)


def _cmd_export(args: argparse.Namespace) -> int:
    """Through the model's Task: its formats, its export module, its checks (no per-task branch)."""
    from ..train.task import get_task

    if args.format not in FORMATS:  # argparse choices already enforce it; kept for API callers
        raise UserError(f"unsupported format {args.format!r}; expected one of {', '.join(FORMATS)}")
    if args.precision == "fp32" and (args.int8 or args.qat):
        raise UserError(f"--precision fp32 contradicts {'--int8' if args.int8 else '--qat'}")
    args.int8 = args.int8 or args.precision == "int8"
    if args.qat:
        return _export_qat(args)
    if args.source is None:
        raise UserError("give a model: a registry name or a checkpoint (or --qat CKPT for a QAT checkpoint)")
    if args.int8 and not args.calib:
        raise UserError("--int8 needs calibration data: add --calib digits|digit-clutter|fake|DIR (a folder of your "
                        "own images, ideally ~100-500 of the deployment distribution; detectors: "
                        "digit-scenes|fake|DIR)")
    if args.calib and not args.int8:
        raise UserError("--calib is for --int8 exports: add --int8 (or drop --calib for fp32)")
    if args.calib_method and not args.int8:
        raise UserError("--calib-method is for --int8 exports: add --int8 --calib ...")
    methods = runtime_for(args.format).calib_methods
    if args.calib_method and args.calib_method not in methods:
        import difflib

        close = difflib.get_close_matches(args.calib_method, methods, n=1)
        raise UserError(f"--calib-method: --format {args.format} takes {', '.join(methods)}; got "
                        f"{args.calib_method!r}" + (f" (did you mean {close[0]}?)" if close else ""))
    suffix = FORMATS[args.format]
    if args.format != "onnx" and Path(args.out).suffix.lower() != suffix:
        raise UserError(f"--format {args.format} writes a {suffix} file; got --out {args.out}")
    model, name = load_for_export(args.source, args.model, args.num_classes, args.weights)
    info = model_info(model)
    task = get_task(info.task)
    try:
        task.check_export(args.format, args.int8, args.dynamic_batch)
        if args.dynamic_batch and args.format != "onnx":
            raise ValueError(f"--format {args.format} writes a fixed-shape file (batch 1): drop --dynamic-batch")
    except ValueError as e:
        raise UserError(str(e)) from None
    size = tuple(args.input_size) if args.input_size else tuple(info.input_size[1:])
    calib = calibration_for(args, model, size) if args.int8 else None
    float_layers = tuple(n.strip() for n in (args.float_layers or "").split(",") if n.strip())
    try:
        res = task.export(model, args.format, Path(args.out), size, calib=None if calib is None else calib.images,
                          opset=args.opset, dynamic_batch=args.dynamic_batch, allow_fallback=args.allow_fallback,
                          float_layers=float_layers, **({"calib_method": args.calib_method} if args.calib_method else {}))
    except ValueError as e:
        if not str(e).startswith(("float layers", "float_layers")):
            raise
        raise UserError(str(e)) from None
    kind = res.kind[:-1] + f", {calib.summary()})" if calib is not None else res.kind
    print(f"wrote {res.path} ({res.path.stat().st_size / 2 ** 20:.1f} MiB): {name}, {kind}, input "
          f"{res.input_shape}; {res.checked}"
          + (f"; inputs normalized with mean {_short(info.mean)} std {_short(info.std)}" if res.normalized else ""))
    return 0


def _export_qat(args: argparse.Namespace) -> int:
    """``export --qat CKPT``: the QAT model rebuilt from its checkpoint, converted with its runtime's
    quantizer (ONNX: the QDQ graph), lowered, written and verified by running the file."""
    from ..deploy.runtimes import FORMAT_LABELS, QAT_RUNTIMES, runtime_for
    from ..tasks.qat import load_qat_checkpoint

    if args.source is not None:
        raise UserError(f"--qat CKPT is the model to export; drop the model argument {args.source!r}")
    if args.dynamic_batch and args.format != "onnx":
        raise UserError(f"--format {args.format} writes a fixed-shape file (batch 1): drop --dynamic-batch")
    try:
        qat, recipe = load_qat_checkpoint(args.qat)
    except ValueError as e:
        raise UserError(str(e)) from None
    fmt = QAT_RUNTIMES.get(recipe["qat"], recipe["qat"])
    if fmt != args.format:
        raise UserError(f"{args.qat} was quantization-aware trained for {FORMAT_LABELS[fmt]} (qat={recipe['qat']}); "
                        f"export it with --format {fmt}, or train QAT for {FORMAT_LABELS[args.format]}")
    size = (recipe["img_size"],) * 2
    if args.input_size and tuple(args.input_size) != size:
        raise UserError(f"{args.qat} was trained (and its graph captured) at {size[0]}x{size[1]}; "
                        f"got --input-size {' '.join(map(str, args.input_size))}")
    calib = calibration_for(args, qat, size) if args.calib else None
    images = None if calib is None else calib.images
    if fmt == "onnx":
        from ..deploy.qat import export_qat_onnx

        path = export_qat_onnx(qat, args.out, size, dynamic_batch=args.dynamic_batch, opset=args.opset,
                               example_input=images)
        checked = "checked in ONNX Runtime against the QAT model"
    else:
        from ..deploy.mobile import export_mobile

        res = export_mobile(runtime_for(fmt), qat, args.out, size, calib=images,
                            allow_fallback=args.allow_fallback)
        path, checked = res.path, res.summary()
    print(f"wrote {path} ({Path(path).stat().st_size / 2 ** 20:.1f} MiB): {recipe['model']}, INT8 "
          f"(quantization-aware trained for {FORMAT_LABELS[fmt]}), input (1, {model_info(qat).in_chans}, "
          f"{size[0]}, {size[1]}); {checked}")
    return 0


def _cmd_sensitivity(args: argparse.Namespace) -> int:
    """``mobilenets sensitivity``: each layer quantized alone, ranked; then INT8 with the K most
    sensitive layers kept float, for each K, agreement with fp32 and latency in the runtime."""
    import json

    from ..deploy.mobile import export_mobile
    from ..deploy.runtimes import FORMAT_LABELS, runtime_for
    from ..deploy.sensitivity import layer_sensitivity, plot_sensitivity
    from ..deploy.timing import interleaved_timings
    from ..textutil import table as text_table
    from ..weights.io import atomic_write

    if args.format == "onnx":
        raise UserError("mobilenets sensitivity is for the on-device runtimes: --format executorch or tflite")
    if any(k < 0 for k in args.keep_float):
        raise UserError(f"--keep-float: expected counts >= 0, got {args.keep_float}")
    model, name = load_for_export(args.source, args.model, args.num_classes, args.weights)
    info = model_info(model)
    size = tuple(args.input_size) if args.input_size else tuple(info.input_size[1:])
    calib = calibration_for(args, model, size).images
    runtime = "executorch" if args.format == "executorch" else "litert"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ranked = layer_sensitivity(model, runtime, calib, size, progress=not args.quiet)
    rows = [[i + 1, r.layer, r.kind, f"{r.rel_rms:.4f}", f"{100 * r.agreement:.1f}%"] for i, r in enumerate(ranked)]
    text = text_table(["rank", "layer", "kind", "logits rel. RMS vs fp32", "top-1 agreement"], rows,
                      [True, False, False, True, True])
    rt = runtime_for(args.format)
    variants, runners = [], {}
    for k in sorted(set(args.keep_float)):
        keep = tuple(r.layer for r in ranked[:k])
        path = out / f"int8_float{k}{rt.suffix}"
        res = export_mobile(rt, model, path, size, calib=calib, float_layers=keep, allow_fallback=args.allow_fallback)
        variants.append({"keep_float": k, "layers": list(keep), "agreement": res.agreement, "file": str(path)})
        runners[f"k{k}"] = rt.runner(str(path), threads=args.threads)
    fp32 = export_mobile(rt, model, out / f"fp32{rt.suffix}", size)
    runners["fp32"] = rt.runner(str(fp32.path), threads=args.threads)
    x = calib[:1]
    t = interleaved_timings({k: (lambda r=r: r(x)) for k, r in runners.items()}, seconds=args.seconds * len(runners))
    for v in variants:
        v["ms"] = t[f"k{v['keep_float']}"]["ms"]
        v["x_fp32"] = v["ms"] / t["fp32"]["ms"]
    mixed = text_table(["float layers", "top-1 agreement with fp32", "ms", "x fp32"],
                       [[v["keep_float"], f"{100 * v['agreement']:.1f}%", f"{v['ms']:.3f}", f"{v['x_fp32']:.2f}"]
                        for v in variants] + [["fp32", "", f"{t['fp32']['ms']:.3f}", "1.00"]], [True] * 4)
    result = {"model": name, "runtime": FORMAT_LABELS[args.format], "input_size": list(size),
              "calib_images": len(calib), "ranking": [r.__dict__ for r in ranked], "mixed": variants,
              "fp32_ms": t["fp32"]["ms"], "threads": args.threads}
    atomic_write(out / "sensitivity.json", lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1)))
    atomic_write(out / "sensitivity.md", lambda tmp: Path(tmp).write_text(
        f"# INT8 sensitivity: {name}, {FORMAT_LABELS[args.format]}, {size[0]}x{size[1]}\n\n```text\n{text}\n```\n\n"
        f"## K most sensitive layers kept float\n\n```text\n{mixed}\n```\n"))
    plot_sensitivity(ranked, out / "sensitivity.png", f"INT8 sensitivity per layer: {name}")
    print(text)
    print()
    print(mixed)
    print(f"wrote {out}/sensitivity.json, sensitivity.md, sensitivity.png and the INT8 files")
    return 0


def _short(values) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


def _cmd_bench(args: argparse.Namespace) -> int:
    import mobilenets
    from ..deploy.bench import ALL_PATHS, LABELS, bench, mixed_runtime_note

    names: list[str] = []
    for pat in args.names:
        with warnings.catch_warnings():  # no match is the UserError below
            warnings.simplefilter("ignore", UserWarning)
            found = (mobilenets.list_models(pat, include_tags="." in pat) if any(c in pat for c in "*?[")
                     else [pat])
        if not found:
            raise UserError(f"no model matches {pat!r}")
        names += [n for n in found if n not in names]
    paths = [p for p in ALL_PATHS if p not in (args.skip or [])]
    if args.paths:
        paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    size = square_size(args.input_size, "bench")
    report = bench(names, batches=args.batch_size, threads=args.threads, size=size, paths=paths,
                   repeats=args.repeats, calib=args.calib, log=log, seconds=args.seconds, one_process=args.one_process)
    if json_only(args):
        emit_json(args, report.as_dict())
        return 0
    m = report.machine
    print(f"\n{m['cpu']}, {m['threads']} threads, torch {m['torch']}"
          + "".join(f", {k} {m[k]}" for k in ("onnxruntime", "timm") if k in m)
          + f"; input {size}x{size}; {report.peak_line()}")
    print(report.table(markdown=args.markdown))
    print("\nms: median per batch; p25-p75: quartiles of the timed iterations. x timm ORT / x timm eager: "
          "ratio of medians in this run (< 1: faster); x roofline: ms / (MACs / measured peak MAC rate), fp32 paths only.")
    sep = report.machine.get("separate_process")
    if sep:
        print(f"{', '.join(LABELS.get(p, p) for p in sep['paths'])}: timed in a separate process (ExecuTorch and "
              "LiteRT each keep an XNNPACK thread pool and slow each other in one); their x timm and x roofline "
              "ratios are against the references and the peak measured in that process (--one-process: all in one)")
    mixed = mixed_runtime_note([r.path for r in report.rows if r.ms is not None and not (sep and r.path in sep["paths"])])
    if mixed:
        print(mixed)
    emit_json(args, report.as_dict())
    return 0


def add_commands(subparsers) -> None:
    """Register ``export`` and ``bench`` on an ``argparse`` subparsers object."""
    from ..deploy.bench import ALL_PATHS

    p = subparsers.add_parser("export", help="export a model or checkpoint to ONNX, ExecuTorch or LiteRT (fp32 or INT8)",
                              description="Export a registry model (random or --weights) or a training "
                                          "checkpoint to ONNX (verified with ONNX Runtime), ExecuTorch .pte "
                                          "(XNNPACK; verified in ExecuTorch's runtime) or LiteRT .tflite "
                                          "(verified in LiteRT's Interpreter), BatchNorm folded, written "
                                          "atomically. --int8: static post-training quantization.")
    p.add_argument("source", metavar="NAME|CHECKPOINT", nargs="?", default=None,
                   help="registry name (NAME.TAG: a pretrained tag's preprocessing) or checkpoint path (not with --qat)")
    p.add_argument("--format", choices=tuple(FORMATS), default="onnx",
                   help="onnx (ONNX Runtime), executorch (.pte, XNNPACK delegate) or tflite (LiteRT)")
    p.add_argument("--out", required=True, help="output file: .onnx, .pte or .tflite (as --format)")
    p.add_argument("--int8", action="store_true", help="static INT8 quantization (needs --calib)")
    p.add_argument("--precision", choices=("fp32", "int8"), default=None,
                   help="fp32 (default) or int8 (= --int8; with --qat the QAT model's INT8)")
    p.add_argument("--float-layers", metavar="NAME[,NAME...]", default=None,
                   help="INT8 (executorch / tflite): keep these layers (module paths, as mobilenets sensitivity "
                        "ranks them) in float")
    p.add_argument("--qat", metavar="CKPT", default=None,
                   help="export a quantization-aware trained checkpoint (mobilenets train --qat RUNTIME) as INT8 "
                        "for its runtime; --calib then only feeds the agreement check")
    p.add_argument("--calib", help="calibration images for --int8: digits | digit-clutter | fake | DIR (image folder); "
                                   "detectors: digit-scenes | fake | DIR")
    p.add_argument("--calib-count", type=int, default=128, help="calibration images (default 128)")
    p.add_argument("--calib-method", default=None,
                   help="how --int8 picks each activation's range from the calibration images: executorch / tflite: "
                        "auto (default: mse or average, whichever is closer to fp32 on the calibration images, then "
                        "per group of activations the method that brings the outputs closer), mse, "
                        "minmax, percentile, average; onnx: minmax (default), entropy, percentile")
    p.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension")
    add_input_size(p, help="traced input size (default: the checkpoint's training size, else 224)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 13-20 (default 17)")
    p.add_argument("--allow-fallback", action="store_true",
                   help="executorch / tflite: accept ops outside XNNPACK / non-builtin ops instead of failing")
    p.add_argument("--weights", help="weights for a registry name (file or hf-hub:org/name)")
    p.add_argument("--model", help="architecture, for a plain weights file given as CHECKPOINT")
    p.add_argument("--num-classes", type=int, default=None, help="classifier size (default: from the weights, else 1000)")
    p.set_defaults(func=_cmd_export)

    s = subparsers.add_parser("sensitivity", help="per-layer INT8 sensitivity and mixed precision (ExecuTorch, LiteRT)",
                              description="Quantize each layer alone with the runtime's quantizer and rank the layers "
                                          "by how far the logits move from fp32; then export INT8 with the K most "
                                          "sensitive layers kept float for each --keep-float K, and report each one's "
                                          "top-1 agreement with fp32 and latency in the runtime (one interleaved run).")
    s.add_argument("source", metavar="NAME|CHECKPOINT", help="registry name or checkpoint path")
    s.add_argument("--format", choices=("executorch", "tflite"), default="executorch")
    s.add_argument("--out", required=True, metavar="DIR", help="sensitivity.json / .md / .png and the INT8 files")
    s.add_argument("--calib", default="digits", help="calibration and measurement images (default digits)")
    s.add_argument("--calib-count", type=int, default=64, help="images (default 64)")
    s.add_argument("--keep-float", type=int, nargs="+", default=[0, 1, 2, 4], metavar="K",
                   help="export INT8 with the K most sensitive layers in float, for each K (default 0 1 2 4)")
    s.add_argument("--threads", type=int, default=2, help="runtime threads for the timing (default 2)")
    s.add_argument("--seconds", type=float, default=2.0, help="timing per file (default 2)")
    s.add_argument("--allow-fallback", action="store_true", help="accept ops outside the accelerated backend")
    add_input_size(s, help="input size (default: the checkpoint's training size, else 224)")
    s.add_argument("--weights", help="weights for a registry name")
    s.add_argument("--model", help="architecture, for a plain weights file")
    s.add_argument("--num-classes", type=int, default=None)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_sensitivity)

    b = subparsers.add_parser("bench", help="CPU latency of our deployment paths vs timm / torchvision",
                              description="Times our paths (eager, fused + channels_last, fused + oneDNN "
                                          "prepacked, torch.compile, ONNX Runtime fp32 and INT8, ExecuTorch XNNPACK and LiteRT fp32 and INT8) and the reference paths (timm eager, timm -> "
                                          "ONNX Runtime, torchvision eager) in one interleaved run and prints "
                                          "ratios of medians and the roofline limit.")
    b.add_argument("names", nargs="+", metavar="NAME", help="registry names (NAME.TAG too) or patterns")
    add_batch_size(b, default=[1, 32], multiple=True, help="batch sizes (default 1 32)")
    b.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    add_input_size(b, default=(224, 224), square=True, help="input resolution (default 224)")
    b.add_argument("--paths", help=f"comma-separated subset of {','.join(ALL_PATHS)}")
    b.add_argument("--skip", nargs="+", choices=ALL_PATHS, help="paths to leave out (e.g. compile)")
    b.add_argument("--repeats", type=int, default=None, help="timed iterations per path (default: auto)")
    b.add_argument("--seconds", type=float, default=4.0, help="auto repeats: ~seconds per path (default 4)")
    b.add_argument("--calib", default="fake", help="INT8 calibration data: fake | digits | digit-clutter | DIR")
    add_json(b, "every measurement")
    b.add_argument("--markdown", action="store_true", help="print the table as markdown")
    b.add_argument("--one-process", action="store_true",
                   help="time ExecuTorch and LiteRT in one process (default: LiteRT in its own process when both "
                        "are asked for; they slow each other in one)")
    b.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    b.set_defaults(func=_cmd_bench)
