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

from ..models.info import model_info
from .common import (UserError, add_batch_size, add_input_size, add_json, emit_json, json_only,
                        square_size)


def load_for_export(source: str, model_name: str | None = None, num_classes: int | None = None,
                    weights: str | None = None):
    """``(model, info)`` for a registry name (optionally with ``weights``) or a checkpoint path.

    ``info`` has ``name``, ``img_size`` and ``norm`` (the training recipe's ``mean``, ``std`` and
    ``crop_pct`` for the calibration images, when a checkpoint records them; else None).
    """
    import mobilenets
    from ..models.registry import is_model

    if is_model(source):
        model = mobilenets.create_model(source, num_classes=num_classes or 1000, pretrained=weights)
        return model.eval(), {"name": source, "img_size": None, "norm": None}
    path = Path(source)
    if not path.exists():
        from ..weights.io import SAFETENSORS_SUFFIXES, TORCH_SUFFIXES
        if path.suffix.lower() in TORCH_SUFFIXES + SAFETENSORS_SUFFIXES or len(path.parts) > 1:
            raise FileNotFoundError(f"unknown model {source!r}, and no such checkpoint file: {path}")
        mobilenets.get_entry(source)  # not a file either: UnknownModelError naming close matches
    if weights:
        raise UserError("--weights goes with a model name; a checkpoint path already holds weights")
    from ..factory import model_from_checkpoint
    model, info = model_from_checkpoint(path, model_name=model_name, num_classes=num_classes)
    recipe = info.get("recipe") or {}
    norm = {k: recipe[k] for k in ("mean", "std", "crop_pct") if recipe.get(k) is not None} or None
    return model, {"name": recipe.get("model") or model_name or path.stem, "img_size": recipe.get("img_size"),
                   "norm": norm}


def calibration_for(args: argparse.Namespace, model, size: tuple, norm=None):
    """The ``--calib`` images for an INT8 export (:class:`~.calibration.CalibrationSet`: the
    images really used, and the unreadable files skipped), normalized as the model was trained
    (``norm``: the recipe's ``mean`` / ``std`` / ``crop_pct``)."""
    from ..deploy.calibration import calibration_set

    return calibration_set(args.calib, count=args.calib_count, input_size=size,
                           in_chans=model_info(model).in_chans, **(norm or {}))


def _cmd_export(args: argparse.Namespace) -> int:
    from ..deploy import export_onnx

    if args.format not in FORMATS:  # argparse choices already enforce it; kept for API callers
        raise UserError(f"unsupported format {args.format!r}; expected one of {', '.join(FORMATS)}")
    if args.int8 and not args.calib:
        raise UserError("--int8 needs calibration data: add --calib digits|fake|DIR (a folder of your "
                        "own images, ideally ~100-500 of the deployment distribution)")
    if args.calib and not args.int8:
        raise UserError("--calib is for --int8 exports: add --int8 (or drop --calib for fp32)")
    suffix = FORMATS[args.format]
    if args.format != "onnx" and Path(args.out).suffix.lower() != suffix:
        raise UserError(f"--format {args.format} writes a {suffix} file; got --out {args.out}")
    det = _load_detector(args)
    if det is not None:
        if args.format != "onnx":
            raise UserError(f"detectors export to ONNX only (decode + NMS in the graph); --format "
                            f"{args.format} is for classifiers and feature extractors")
        return _export_detector(args, *det)
    seg = _load_segmenter(args)
    if seg is not None:
        return _export_segmenter(args, *seg)
    model, info = load_for_export(args.source, args.model, args.num_classes, args.weights)
    size = tuple(args.input_size) if args.input_size else (info["img_size"] or 224,) * 2
    out = Path(args.out)
    if args.format != "onnx":
        return _export_mobile(args, model, info, size, out)
    if args.int8:
        from ..deploy import quantize_onnx
        calib = calibration_for(args, model, size, info["norm"])
        path = quantize_onnx(model, out, calib.images, input_size=size, dynamic_batch=args.dynamic_batch,
                             opset=args.opset)
        kind = f"INT8 (static, QDQ, {calib.summary()})"
    else:
        path = export_onnx(model, out, input_size=size, opset=args.opset, dynamic_batch=args.dynamic_batch)
        kind = "fp32, BatchNorm folded"
    mb = path.stat().st_size / 2 ** 20
    print(f"wrote {path} ({mb:.1f} MiB): {info['name']}, {kind}, input "
          f"{'N' if args.dynamic_batch else '1'}x{model_info(model).in_chans}x{size[0]}x{size[1]}, "
          f"opset {args.opset}" + ("" if args.int8 else ", checked with ONNX Runtime"))
    return 0


FORMATS = {"onnx": ".onnx", "executorch": ".pte", "tflite": ".tflite"}


def _export_mobile(args: argparse.Namespace, model, info: dict, size: tuple, out: Path) -> int:
    from ..deploy import export_executorch, export_tflite

    if args.dynamic_batch:
        raise UserError(f"--format {args.format} writes a fixed-shape file (batch 1): drop --dynamic-batch")
    fn = export_executorch if args.format == "executorch" else export_tflite
    calib = calibration_for(args, model, size, info.get("norm")) if args.int8 else None
    res = fn(model, out, input_size=size, calib=None if calib is None else calib.images,
             allow_fallback=args.allow_fallback)
    kind = (f"INT8 (PT2E static, per-channel weights, {calib.summary()})" if calib is not None
            else "fp32, BatchNorm folded")
    shape = "x".join(str(s) for s in res.input_shape)
    print(f"wrote {res.path} ({res.path.stat().st_size / 2 ** 20:.1f} MiB): {info['name']}, {kind}, input {shape}; "
          f"{res.summary()}")
    return 0


def _load_detector(args: argparse.Namespace):
    """``(detector, name, img_size)`` when the source is a detection model name or a detection
    training checkpoint, else None."""
    import mobilenets
    from ..models.registry import is_model
    from ..tasks.detection.infer import is_detection_checkpoint, load_detector_checkpoint

    if is_model(args.source) and mobilenets.get_entry(args.source).task == "detection":
        from ..tasks.detection.models import native_size
        model = mobilenets.create_model(args.source, num_classes=args.num_classes, pretrained=args.weights)
        return model.eval(), args.source, native_size(args.source)  # the size the detector works at
    if Path(args.source).is_file() and is_detection_checkpoint(args.source):
        model, info = load_detector_checkpoint(args.source)
        return model, info["recipe"].model, info["recipe"].img_size
    return None


def _load_segmenter(args: argparse.Namespace):
    """``(segmenter, name, img_size, normalization)`` when the source is a segmentation model
    name or a segmentation training checkpoint, else None."""
    import mobilenets
    from ..models.registry import is_model
    from ..tasks.segmentation.infer import is_segmentation_checkpoint, load_segmenter_checkpoint

    if is_model(args.source) and mobilenets.get_entry(args.source).task == "segmentation":
        model = mobilenets.create_model(args.source, num_classes=args.num_classes or 21, pretrained=args.weights)
        return model.eval(), args.source, 520, None
    if Path(args.source).is_file() and is_segmentation_checkpoint(args.source):
        model, info = load_segmenter_checkpoint(args.source)
        r = info["recipe"]
        return model, r.model, r.img_size, (tuple(r.mean), tuple(r.std))


def _export_segmenter(args: argparse.Namespace, model, name: str, img_size: int, norm) -> int:
    from ..deploy import export_onnx

    size = tuple(args.input_size) if args.input_size else (img_size, img_size)
    if args.format != "onnx":  # the "out" logits as one tensor (deploy.mobile.MainOutput)
        norm = None if norm is None else {"mean": norm[0], "std": norm[1]}
        return _export_mobile(args, model, {"name": name, "norm": norm}, size, Path(args.out))
    if args.int8:
        raise UserError("--int8 ONNX exports are for classifiers; segmenters export ONNX in fp32 (BatchNorm "
                        "folded), or INT8 with --format executorch|tflite")
    path = export_onnx(model, args.out, input_size=size, opset=args.opset, dynamic_batch=args.dynamic_batch)
    outs = "out, aux" if getattr(model, "aux_loss", False) else "out"
    print(f"wrote {path} ({path.stat().st_size / 2 ** 20:.1f} MiB): {name}, fp32, BatchNorm folded, input "
          f"{'N' if args.dynamic_batch else '1'}x3x{size[0]}x{size[1]}"
          + (f" normalized with mean {norm[0]} std {norm[1]}" if norm else " (normalized)")
          + f", outputs {outs} (N x {model.num_classes} x H x W logits), opset {args.opset}, "
            f"checked with ONNX Runtime (1e-4 relative)")
    return 0


def _export_detector(args: argparse.Namespace, model, name: str, img_size: int) -> int:
    from ..tasks.detection.export import export_detector_onnx

    if args.int8 or args.dynamic_batch:
        raise UserError("detectors export one fp32 image at a time with NMS in the graph: "
                        "--int8 and --dynamic-batch are for classifiers")
    size = tuple(args.input_size) if args.input_size else (img_size, img_size)
    path = export_detector_onnx(model, args.out, input_size=size, opset=args.opset)
    print(f"wrote {path} ({path.stat().st_size / 2 ** 20:.1f} MiB): {name}, fp32, BatchNorm folded, "
          f"decode + NMS in the graph, input image 3x{size[0]}x{size[1]} in [0, 1], opset {args.opset}, "
          f"checked with ONNX Runtime (boxes within 1e-3 px)")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import mobilenets
    from ..deploy.bench import ALL_PATHS, bench

    names: list[str] = []
    for pat in args.names:
        with warnings.catch_warnings():  # no match is the UserError below
            warnings.simplefilter("ignore", UserWarning)
            found = mobilenets.list_models(pat) if any(c in pat for c in "*?[") else [pat]
        if not found:
            raise UserError(f"no model matches {pat!r}")
        names += [n for n in found if n not in names]
    paths = [p for p in ALL_PATHS if p not in (args.skip or [])]
    if args.paths:
        paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    size = square_size(args.input_size, "bench")
    report = bench(names, batches=args.batch_size, threads=args.threads, size=size, paths=paths,
                   repeats=args.repeats, calib=args.calib, log=log, seconds=args.seconds)
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
    for line in report.goals():
        print("goal " + line)
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
    p.add_argument("source", metavar="NAME|CHECKPOINT", help="registry name or checkpoint path")
    p.add_argument("--format", choices=tuple(FORMATS), default="onnx",
                   help="onnx (ONNX Runtime), executorch (.pte, XNNPACK delegate) or tflite (LiteRT)")
    p.add_argument("--out", required=True, help="output file: .onnx, .pte or .tflite (as --format)")
    p.add_argument("--int8", action="store_true", help="static INT8 quantization (needs --calib)")
    p.add_argument("--calib", help="calibration images for --int8: digits | fake | DIR (image folder)")
    p.add_argument("--calib-count", type=int, default=128, help="calibration images (default 128)")
    p.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension")
    add_input_size(p, help="traced input size (default: the checkpoint's training size, else 224)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 13-20 (default 17)")
    p.add_argument("--allow-fallback", action="store_true",
                   help="executorch / tflite: accept ops outside XNNPACK / non-builtin ops instead of failing")
    p.add_argument("--weights", help="weights for a registry name (file or hf-hub:org/name)")
    p.add_argument("--model", help="architecture, for a plain weights file given as CHECKPOINT")
    p.add_argument("--num-classes", type=int, default=None, help="classifier size (default: from the weights, else 1000)")
    p.set_defaults(func=_cmd_export)

    b = subparsers.add_parser("bench", help="CPU latency of our deployment paths vs timm / torchvision",
                              description="Times our paths (eager, fused + channels_last, fused + oneDNN "
                                          "prepacked, torch.compile, ONNX Runtime fp32 and INT8, ExecuTorch XNNPACK and LiteRT fp32 and INT8) and the reference paths (timm eager, timm -> "
                                          "ONNX Runtime, torchvision eager) in one interleaved run and prints "
                                          "ratios of medians and the roofline limit.")
    b.add_argument("names", nargs="+", metavar="NAME", help="registry names or patterns")
    add_batch_size(b, default=[1, 32], multiple=True, help="batch sizes (default 1 32)")
    b.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    add_input_size(b, default=(224, 224), square=True, help="input resolution (default 224)")
    b.add_argument("--paths", help=f"comma-separated subset of {','.join(ALL_PATHS)}")
    b.add_argument("--skip", nargs="+", choices=ALL_PATHS, help="paths to leave out (e.g. compile)")
    b.add_argument("--repeats", type=int, default=None, help="timed iterations per path (default: auto)")
    b.add_argument("--seconds", type=float, default=4.0, help="auto repeats: ~seconds per path (default 4)")
    b.add_argument("--calib", default="fake", help="INT8 calibration data: fake | digits | DIR")
    add_json(b, "every measurement")
    b.add_argument("--markdown", action="store_true", help="print the table as markdown")
    b.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    b.set_defaults(func=_cmd_bench)
