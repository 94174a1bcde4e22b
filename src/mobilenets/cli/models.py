"""``mobilenets list`` (the registered models with parameters and MACs) and ``mobilenets info``
(a model's per-stage shapes and feature levels; a task model's backbone maps)."""

from __future__ import annotations

import argparse
import math
from typing import Optional

from .common import UserError, add_input_size, add_json, emit_json, json_only, table


def list_rows(pattern: str = "*", family: Optional[str] = None, macs: bool = True,
              task: str = "classification") -> list[dict]:
    """One dict per matching model: name, family, params (M) and MACs (M; at 224 for
    classification, at 320 for detectors and 520 for segmenters: one image through backbone,
    neck and heads; ``macs_m_<size>``). The counts come from
    :func:`mobilenets.tasks.listing.model_costs` (the per-version cache, else each model
    built once without its random initialisation)."""
    import mobilenets
    from ..tasks.listing import COST_SIZES, model_costs

    import warnings
    with warnings.catch_warnings():  # no match is the UserError below, naming the families
        warnings.simplefilter("ignore", UserWarning)
        names = mobilenets.list_models(pattern, family=family, task=task)
    if not names:
        families = sorted({mobilenets.get_entry(n).family for n in mobilenets.list_models(task=task)})
        what = "model" if task == "classification" else f"{task} model"
        raise UserError(f"no {what} matches {pattern!r}" + (f" in family {family!r}" if family else "")
                        + f"; families: {families}")
    costs = model_costs(names, task, macs=macs)
    rows = []
    for n in names:
        entry = mobilenets.get_entry(n)
        row = {"name": n, "family": entry.family, "params_m": round(costs[n]["params"] / 1e6, 3)}
        if task != "classification":
            row["backbone"] = entry.defaults.get("backbone", "")
        if macs:
            row[f"macs_m_{COST_SIZES[task]}"] = round(costs[n]["macs"] / 1e6, 1)
        rows.append(row)
    return rows


def _cmd_list(args: argparse.Namespace) -> int:
    rows = list_rows(args.pattern, args.family, macs=not args.no_macs, task=args.task)
    emit_json(args, rows)
    if json_only(args):
        return 0
    from ..tasks.cost import COST_SIZE
    at = str(COST_SIZE.get(args.task, 224))
    extra = [] if args.task == "classification" else ["backbone"]
    headers = ["name", "family"] + extra + ["params (M)"] + ([] if args.no_macs else [f"MACs @{at} (M)"])
    body = [[r["name"], r["family"]] + [r[k] for k in extra] + [f"{r['params_m']:.3f}"]
            + ([] if args.no_macs else [f"{r[f'macs_m_{at}']:.1f}"]) for r in rows]
    print(table(headers, body, [False] * (2 + len(extra)) + [True, True][: len(headers) - 2 - len(extra)]))
    print(f"{len(rows)} model(s)")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import mobilenets

    entry = mobilenets.get_entry(args.name)
    if entry.task != "classification":
        return _task_info(args, entry)
    model = mobilenets.create_model(args.name, num_classes=args.num_classes)
    h, w = args.input_size
    shapes = mobilenets.stage_shapes(model, (h, w))
    print(f"{args.name}  (family {entry.family})")
    paper = getattr(entry.spec, "paper", "")
    if paper:
        print(f"paper: {paper}")
    if entry.reference:
        print("same architecture in: " + ", ".join(f"{k} {v}" for k, v in entry.reference.items()))
    _print_pretrained(model, entry)
    print(f"params: {mobilenets.count_params(model) / 1e6:.3f} M   num_features: {model.num_features}   "
          f"head_hidden_size: {model.head_hidden_size}   classes: {model.num_classes}")
    print(f"\nforward pass at {h}x{w}:")
    # nominal stride (odd sizes round up at each downsampling, so h / out_h is not exact)
    rows = [[name, "x".join(map(str, s[1:])), s[1], 2 ** round(math.log2(h / s[2]))] for name, s in shapes]
    print(table(["module", "output (CxHxW)", "channels", "stride"], rows, [False, False, True, True]))
    print("\nfeature levels (features_only=True, out_indices):")
    rows = [[i, f["module"], f["num_chs"], f["reduction"]] for i, f in enumerate(model.feature_info)]
    print(table(["index", "module", "channels", "reduction"], rows, [True, False, True, True]))
    return 0


def _print_pretrained(model, entry) -> None:
    """The tag the model's timm ``pretrained_cfg`` is for (and the name's other tags), its
    weights and the preprocessing its ModelInfo took from it."""
    from ..models.info import model_info

    cfg, info = model.pretrained_cfg, model_info(model)
    if cfg.get("tag"):
        others = [t for t in entry.tags if t != cfg["tag"]]
        weights = f"hf-hub:{cfg['hf_hub_id']}" if cfg.get("hf_hub_id") else cfg.get("url") or "none"
        print(f"pretrained tag: {cfg['tag']}" + (" (timm's default)" if cfg["tag"] == entry.tags[0] else "")
              + f"   weights: {weights}" + (f"   license: {cfg['license']}" if cfg.get("license") else "")
              + (f"\nother tags: {', '.join(others)}" if others else ""))
    h, w = info.img_size
    print(f"preprocessing: {h}x{w}, crop_pct {info.crop_pct} ({info.crop_mode}), {info.interpolation}, "
          f"mean {tuple(info.mean)}, std {tuple(info.std)}"
          + (f"; test size {cfg['test_input_size'][1]}x{cfg['test_input_size'][2]}" if cfg.get("test_input_size") else ""))


def _task_info(args: argparse.Namespace, entry) -> int:
    """``info`` for a detector or segmenter: its backbone, parameters, MACs (at 320 / 520) and
    the maps its neck / heads read."""
    import mobilenets
    from ..tasks.cost import COST_SIZE, find_taps, task_macs

    model = mobilenets.create_model(args.name).eval()
    s = COST_SIZE[entry.task]
    print(f"{args.name}  ({entry.task}, family {entry.family}, backbone {entry.defaults.get('backbone')})")
    if entry.reference:
        print("same architecture in: " + ", ".join(f"{k} {v}" for k, v in entry.reference.items()))
    print(f"params: {mobilenets.count_params(model) / 1e6:.3f} M   MACs at {s}x{s}: "
          f"{task_macs(model, entry.task) / 1e6:.1f} M   classes (incl. background): {model.num_classes}")
    taps = find_taps(model)
    label = {"out": "out", "pre_stride": "pre-stride expansion"}
    rows = [[name, f"{label[kind]} of layer {layer}", ch, stride]
            for name, (kind, layer), ch, stride in zip(taps.names, taps.taps, taps.channels, taps.strides)]
    print(f"\nbackbone maps the {'neck' if entry.task == 'detection' else 'heads'} read"
          f"{'s' if entry.task == 'detection' else ''} (layer 0 = stem, i = block i-1):")
    print(table(["map", "tap", "channels", "stride"], rows, [True, False, True, True]))
    return 0


def add_commands(sub) -> None:
    """Register ``list`` and ``info`` on an ``add_subparsers()`` object."""
    p = sub.add_parser("list", help="registered models with params and MACs")
    p.add_argument("pattern", nargs="?", default="*", help="shell glob, e.g. 'mobilenetv4*'")
    p.add_argument("--family", help="only this family (mobilenetv1 ... mobileformer; ssdlite, fasterrcnn, retinanet)")
    p.add_argument("--task", choices=("classification", "detection", "segmentation"), default="classification",
                   help="which models: the backbones (default) or the task models on them")
    add_json(p, "the rows")
    p.add_argument("--no-macs", action="store_true", help="skip the MACs column (faster)")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="per-stage output shapes and feature levels of a model")
    p.add_argument("name", help="registry name, optionally with a pretrained tag (NAME.TAG, see "
                   "mobilenets.list_pretrained())")
    add_input_size(p, default=(224, 224), help="input size of the forward pass (default 224)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier outputs (default: the tag's, else the model's own: 1000 for most, 0 for an encoder)")
    p.set_defaults(func=_cmd_info)
