"""``mobilenets profile`` and ``mobilenets roofline``: the analysis commands.

The main CLI wires them in with :func:`add_commands`::

    sub = parser.add_subparsers(dest="command")
    add_commands(sub)
    args = parser.parse_args()
    return args.func(args)          # every handler returns an exit code

User errors (unknown model, bad sizes, bad numbers, matplotlib missing) print their message
on stderr and return 2 (:func:`mobilenets.cli.common.run_handler`). Both commands take the shared
``--json [FILE]`` and ``--input-size N | H W``; ``profile`` also ``--batch-size``.
"""

from __future__ import annotations

import argparse
import functools
import math
from typing import Optional

from .common import (UserError, add_batch_size, add_input_size, add_json, emit_json, json_only,
                        run_handler as _run, table as _table)
from ..analysis.accuracy import ACCURACY
from ..archs.spec import model_label
from ..analysis.profile import DTYPE_BYTES, Profile, profile
from ..analysis.roofline import DEFAULT_PEAK_MACS, DEFAULT_RPS, sweep

_SUFFIX = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "p": 1e15}


def _number(text: str, what: str) -> float:
    s = text.strip().lower()
    mult = 1.0
    if s and s[-1] in _SUFFIX:
        s, mult = s[:-1], _SUFFIX[s[-1]]
    try:
        v = float(s) * mult
    except ValueError:
        raise UserError(f"{what}: expected a number like 1e12 or 500G, got {text!r}") from None
    if math.isnan(v) or math.isinf(v) or v <= 0:
        raise UserError(f"{what} must be a positive number, got {text!r}")
    return v


def parse_rps(text: str) -> tuple:
    """``"0,10,50"`` -> ``(0, 10, 50)``; raises :class:`UserError` on a bad or negative value."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise UserError(f"--rp: expected comma-separated numbers like 0,10,50, got {text!r}") from None
        if math.isnan(v) or math.isinf(v) or v < 0:
            raise UserError(f"--rp: ridge points must be finite and >= 0, got {part!r}")
        out.append(int(v) if v.is_integer() else v)
    if not out:
        raise UserError("--rp: give at least one ridge point, e.g. 0,10,50,100,500")
    return tuple(out)


@functools.lru_cache(maxsize=None)
def macs_at_224(name: str) -> int:
    """MACs of registry model ``name`` at 224x224, batch 1 (cached; for ``mobilenets list``)."""
    return profile(name, (224, 224)).macs


def _human(n: float, unit: str = "") -> str:
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suf}{unit}"
    return f"{n:.0f}{unit}"


def _kib(n: int) -> str:
    return f"{n / 1024:.1f}"


def format_profile(prof: Profile, by: str = "layer") -> str:
    """The ``profile`` command's text table."""
    headers = ["layer" if by == "layer" else "stage", "kind" if by == "layer" else "layers",
               "output", "MACs", "params", "W KiB", "in KiB", "out KiB", "MAC/B"]
    right = [False, by != "layer", False, True, True, True, True, True, True]
    rows = []
    if by == "layer":
        for r in prof.layers:
            rows.append([r.name, r.kind, "x".join(map(str, r.out_shape[1:])), _human(r.macs),
                         _human(r.params), _kib(r.weight_bytes), _kib(r.input_bytes),
                         _kib(r.output_bytes), f"{r.intensity:.1f}"])
    else:
        for g in prof.by_stage():
            inten = g["macs"] / g["bytes"] if g["bytes"] else float("inf")
            rows.append([g["name"], g["layers"], "x".join(map(str, g["out_shape"][1:])),
                         _human(g["macs"]), _human(g["params"]), _kib(g["weight_bytes"]),
                         _kib(g["input_bytes"]), _kib(g["output_bytes"]), f"{inten:.1f}"])
    t = prof
    rows.append(["total", len(t.layers) if by != "layer" else "", "", _human(t.macs),
                 _human(t.params), _kib(t.weight_bytes),
                 _kib(sum(r.input_bytes for r in t.layers)),
                 _kib(sum(r.output_bytes for r in t.layers)),
                 f"{t.macs / t.bytes:.1f}" if t.bytes else "-"])
    head = (f"{t.model} @ {t.input_size[0]}x{t.input_size[1]}, batch {t.batch_size}, {t.dtype} "
            f"({DTYPE_BYTES[t.dtype]} B/element): {t.macs / 1e6:.1f} MMACs, "
            f"{t.model_params / 1e6:.3f}M params, {t.bytes / 2**20:.2f} MiB moved "
            f"(weights {t.weight_bytes / 2**20:.2f} + activations {t.act_bytes / 2**20:.2f})")
    return head + "\n" + _table(headers, rows, right)


def _size(args, default=(224, 224)) -> Optional[tuple]:
    return tuple(args.input_size) if args.input_size else default


_FILE_SUFFIXES = (".pte", ".tflite", ".onnx")


def _cmd_op_profile(args: argparse.Namespace) -> int:
    from ..deploy.op_profile import format_op_profile, op_profile

    given = [o for o, v in (("--input-size", args.input_size), ("--by stage", args.by != "layer"),
                            ("--dtype", args.dtype != "fp32")) if v]
    if given:
        raise UserError(f"{given[0]} is for a registry model's analytic profile; a file is profiled as written")
    try:
        prof = op_profile(args.name, runs=args.runs, threads=args.threads)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from None
    if args.plot:
        from ..analysis.plots import plot_op_profile
        plot_op_profile(prof, args.plot)
    if args.json:
        emit_json(args, prof.to_dict(), indent=1)
    if not json_only(args):
        print(format_op_profile(prof, top=args.top))
        if args.plot:
            print(f"wrote {args.plot}")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    if args.name.lower().endswith(_FILE_SUFFIXES):
        return _cmd_op_profile(args)
    prof = profile(args.name, _size(args), batch_size=args.batch_size, dtype=args.dtype)
    if args.plot:
        from ..analysis.plots import plot_intensity
        plot_intensity(prof, args.plot)
    if args.json:
        d = prof.to_dict()
        if args.by == "stage":
            d["stages"] = prof.by_stage()
            for g in d["stages"]:
                g["out_shape"] = list(g["out_shape"])
            del d["layers"]
        emit_json(args, d, indent=1)
    if not json_only(args):
        print(format_profile(prof, args.by))
        if args.plot:
            print(f"wrote {args.plot}")
    return 0


def _cmd_roofline(args: argparse.Namespace) -> int:
    from ..models.registry import is_model, list_models

    rps = parse_rps(args.rp)
    peak = _number(args.peak_macs, "--peak-macs") if args.peak_macs else DEFAULT_PEAK_MACS
    names = list(args.names) or [n for n in ACCURACY if is_model(n)]
    expanded = []
    for n in names:  # accept shell-style patterns: 'mobilenetv4*'
        matched = list_models(n) if any(ch in n for ch in "*?[") else [n]
        if not matched:
            raise UserError(f"no registered model matches {n!r}")
        expanded += [m for m in matched if m not in expanded]
    profiles = []
    for n in expanded:
        res = ACCURACY[n].resolution if n in ACCURACY else 224
        profiles.append(profile(n, _size(args, (res, res)), dtype=args.dtype))
    sw = sweep(profiles, rps, peak)
    acc = {p.model: ACCURACY[p.model].top1 for p in profiles if p.model in ACCURACY}
    fronts = {rp: set(sw.pareto(rp, acc)) for rp in rps}
    if args.plot:
        from ..analysis.plots import plot_sweep
        if not acc:
            raise UserError("--plot needs models with a published accuracy "
                            "(see mobilenets.analysis.accuracy.ACCURACY)")
        plot_sweep(sw, acc, args.plot)
    if args.json:
        out = dict(peak_macs=peak, rps=list(rps), dtype=args.dtype, models=[])
        for p in profiles:
            out["models"].append(dict(
                name=p.model, input_size=list(p.input_size), macs=p.macs, bytes=p.bytes,
                top1=acc.get(p.model), times_ms={str(rp): sw.times(rp)[p.model] * 1e3 for rp in rps},
                pareto_at=[rp for rp in rps if p.model in fronts[rp]]))
        emit_json(args, out, indent=1)
        if json_only(args):
            return 0
    headers = ["model", "size", "MACs", "MiB", "top-1"] + [f"RP={rp} ms" for rp in rps]
    rows = []
    for p in sorted(profiles, key=lambda p: sw.times(rps[0])[p.model]):
        rows.append([model_label(p.model), p.input_size[0], _human(p.macs), f"{p.bytes / 2**20:.1f}",
                     f"{acc[p.model]:.1f}" if p.model in acc else "-"]
                    + [f"{sw.times(rp)[p.model] * 1e3:.3f}{'*' if p.model in fronts[rp] else ''}"
                       for rp in rps])
    print(f"roofline at {peak / 1e12:g} TMAC/s peak, {args.dtype}; bandwidth = peak / RP "
          f"(RP 0: unlimited); * = on the accuracy/latency Pareto front")
    print(_table(headers, rows, [False, True, True, True, True] + [True] * len(rps)))
    if args.plot:
        print(f"wrote {args.plot}")
    return 0


def add_commands(subparsers) -> None:
    """Register ``profile`` and ``roofline`` on an ``argparse`` subparsers object; each sets
    ``func`` (a handler taking the parsed args and returning an exit code)."""
    p = subparsers.add_parser("profile", help="per-layer MACs, params and bytes of a model; per-op time of a file",
                              description="Per-layer MACs, parameters and bytes moved "
                                          "(mobilenets.analysis.profile); for an exported .pte / .tflite "
                                          "file, where its runtime spends the time (mobilenets.deploy.op_profile: "
                                          "XNNPACK's per-operator timings in ExecuTorch; in LiteRT the operators "
                                          "and those outside its XNNPACK delegate).")
    p.add_argument("name", help="registry name (see `mobilenets list`), or an exported .pte / .tflite file")
    p.add_argument("--runs", type=int, default=30, help="file: timed runs (default 30)")
    p.add_argument("--threads", type=int, default=2, help="file: runtime threads (default 2)")
    p.add_argument("--top", type=int, default=10, help="file: list the N slowest operators (default 10)")
    add_input_size(p, help="input size (default 224; at least 32)")
    add_batch_size(p, default=1, help="batch size of the byte counts (default 1)")
    p.add_argument("--by", choices=("stage", "layer"), default="layer",
                   help="one row per layer (default) or per stage")
    p.add_argument("--dtype", choices=tuple(DTYPE_BYTES), default="fp32",
                   help="bytes per element for the byte columns (MACs do not change)")
    add_json(p, "the profile")
    p.add_argument("--plot", metavar="FILE.png", help="write a per-layer operational-intensity chart (a file: its "
                                                       "time per operator kind)")
    p.set_defaults(func=lambda a: _run(_cmd_profile, a), command="profile")

    r = subparsers.add_parser("roofline", help="roofline latency of models across ridge points",
                              description="Roofline latency (MobileNetV4 paper section 4) of "
                                          "models across ridge points RP = PeakMACs/PeakMemBW.")
    r.add_argument("names", nargs="*", help="registry names or patterns (default: every "
                   "registered model with a published accuracy, each at its reference resolution)")
    r.add_argument("--rp", default=",".join(map(str, DEFAULT_RPS)),
                   help="comma-separated ridge points in MACs/byte (default 0,10,50,100,500)")
    r.add_argument("--peak-macs", default=None,
                   help="peak MAC/s, e.g. 1e12 or 500G (default 1T; rankings do not depend on it)")
    add_input_size(r, help="profile every model at this size (default: each model's accuracy "
                           "resolution)")
    r.add_argument("--dtype", choices=tuple(DTYPE_BYTES), default="fp32")
    add_json(r, "the latencies")
    r.add_argument("--plot", metavar="FILE.png", help="write latency-vs-accuracy panels, one per RP")
    r.set_defaults(func=lambda a: _run(_cmd_roofline, a), command="roofline")
