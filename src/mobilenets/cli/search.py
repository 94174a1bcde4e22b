"""``mobilenets search``: platform-aware architecture search.

``search spaces`` lists the shipped search spaces (size, decisions, the hand-designed model each
contains) or prints one (a name or a ``.json`` space file) with ``--show``. ``search table``
measures a space's latency table in a runtime (resumable); ``search predict`` predicts (and with
``--measure`` measures) architectures' latency from a table; ``search run`` is the TuNAS search;
``search adapt`` is NetAdapt (a trained model shrunk to a latency target).
"""

from __future__ import annotations

import argparse
import math
import sys

from .common import (UserError, add_batch_size, add_input_size, add_json, add_torch_threads, emit_json, json_only,
                     set_torch_threads)


def _cmd_spaces(args: argparse.Namespace) -> int:
    from ..models.registry import model_spec
    from ..search.spaces import SPACES, load_space
    from ..textutil import table

    spaces = [load_space(s) for s in args.show] if args.show else list(SPACES.values())
    rows, out = [], []
    for space in spaces:
        found = [n for n in space.contains if space.contains_spec(model_spec(n))]
        out.append(dict(space.to_dict(), size=space.size(), decisions=len(space.decisions()), contains=found))
        rows.append([space.name, len(space.stages), len(space.decisions()), f"10^{math.log10(space.size()):.1f}",
                     ", ".join(found) or "-", space.note])
    emit_json(args, out)
    if json_only(args):
        return 0
    if args.show:
        print("\n\n".join(str(s) for s in spaces))
        return 0
    print(table(["space", "searched stages", "decisions", "architectures", "contains", "what"], rows,
                [False, True, True, True, False, False]))
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..analysis.roofline import DEFAULT_PEAK_MACS
    from ..search.latency import LatencyTable, build_table, space_parts
    from ..search.spaces import load_space

    space = load_space(args.space)
    if args.width_mult is not None:
        space = space.with_width(args.width_mult)
    size = tuple(args.input_size)
    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    roofline = args.runtime == "roofline"
    if not roofline and (args.ridge_point is not None or args.peak_macs is not None or args.calibrate):
        raise UserError(f"--ridge-point, --peak-macs and --calibrate are roofline options; --runtime is {args.runtime}")
    if args.calibrate and args.peak_macs is not None:
        raise UserError("--calibrate measures the peak MAC rate: give it or --peak-macs, not both")
    if args.calibrate:  # this machine's figures (analysis.calibrate): peak, and its ridge point unless given
        import torch

        from ..analysis.calibrate import calibrate

        before = torch.get_num_threads()
        torch.set_num_threads(args.threads)
        try:
            cal = calibrate()
        finally:
            torch.set_num_threads(before)
        args.peak_macs = cal.peak_macs
        if args.ridge_point is None:
            args.ridge_point = cal.ridge_point
        if not args.quiet:
            print(f"calibrated with {args.threads} thread(s): peak {cal.peak_macs / 1e9:.1f} GMAC/s, ridge point "
                  f"{cal.ridge_point:.1f} MACs/byte", file=sys.stderr)
    out = Path(args.out)
    if out.exists():
        table = LatencyTable.load(out)
        table.check_for(space, size, args.runtime, args.precision)
        if table.meta["threads"] != args.threads:
            raise UserError(f"{out} was measured with {table.meta['threads']} thread(s), given --threads "
                            f"{args.threads}; use another --out")
        resumed = len(table.entries)
    else:
        table = LatencyTable.new(space, size, args.runtime, args.precision, args.threads, args.num_classes,
                                 ridge_point=(args.ridge_point or 0.0) if roofline else None,
                                 peak_macs=(args.peak_macs or DEFAULT_PEAK_MACS) if roofline else None, path=out)
        resumed = 0
    total = len(space_parts(space, size, table.meta["num_classes"]))
    if not args.quiet:
        print(f"{space.name}: {total} distinct parts at {size[0]}x{size[1]} in {args.runtime} {args.precision}"
              + (f", {args.threads} thread(s)" if not roofline else f", RP {table.meta['ridge_point']}")
              + (f"; resuming with {resumed} measured" if resumed else ""), file=sys.stderr)
    build_table(table, fit_networks=0 if roofline else args.fit_networks, seconds=args.seconds, seed=args.seed,
                progress=not args.quiet)
    summary = {"table": str(out), "space": space.name, "entries": len(table.entries), "networks": len(table.networks),
               "overhead_ms": table.overhead_ms, **{k: table.meta[k] for k in ("runtime", "precision", "threads",
                                                                               "input_size")}}
    emit_json(args, summary)
    if not json_only(args):
        print(f"wrote {out}: {len(table.entries)} parts, overhead {table.overhead_ms:+.3f} ms "
              f"(fitted on {len(table.networks)} whole networks)")
    return 0


def _resolve_arch(source: str):
    from ..archs.spec import NetSpec
    from ..models.registry import model_spec

    spec = model_spec(source)
    if not isinstance(spec, NetSpec):
        raise UserError(f"{source}: a latency table predicts MobileNet V1-V4 architectures (a NetSpec), "
                        f"got a {type(spec).__name__}")
    return spec


def _cmd_predict(args: argparse.Namespace) -> int:
    import random

    from ..archs.spec import model_label
    from ..search.latency import LatencyTable, mean_abs_pct_error, measure_network, rank_correlation
    from ..textutil import table as text_table

    table = LatencyTable.load(args.table)
    space = table.space
    specs = [(name, _resolve_arch(name)) for name in args.models]
    rng = random.Random(args.seed)
    specs += [(f"random-{i}", space.to_spec(space.sample(rng))) for i in range(args.random)]
    if not specs:
        raise UserError("give models or spec strings to predict, or --random N")
    rows, out = [], []
    for name, spec in specs:
        pred = table.predict(spec)
        meas = measure_network(spec, table, args.seconds)["median"] if args.measure else None
        out.append({"model": name, "spec": str(spec), "predicted_ms": pred, "measured_ms": meas})
        rows.append([model_label(name), f"{pred:.3f}"] + ([f"{meas:.3f}", f"{100 * (pred - meas) / meas:+.1f}%"]
                                                       if meas is not None else []))
    result: dict = {"table": str(args.table), "runtime": table.meta["runtime"], "precision": table.meta["precision"],
                    "models": out}
    if args.measure and len(out) >= 3:
        p, m = [o["predicted_ms"] for o in out], [o["measured_ms"] for o in out]
        result.update(mean_abs_error_pct=mean_abs_pct_error(p, m), spearman=rank_correlation(p, m))
    emit_json(args, result)
    if json_only(args):
        return 0
    headers = ["model", "predicted ms"] + (["measured ms", "error"] if args.measure else [])
    print(text_table(headers, rows, [False] + [True] * (len(headers) - 1)))
    if "spearman" in result:
        print(f"mean absolute error {result['mean_abs_error_pct']:.1f}%, Spearman rank correlation "
              f"{result['spearman']:.3f} ({len(out)} architectures, {table.meta['runtime']} {table.meta['precision']})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ..search.run import SearchSettings, run_search

    set_torch_threads(args)
    if (args.target_ms is None) == (args.target_model is None):
        raise UserError("give the latency target as --target-ms MS or --target-model MODEL_OR_SPEC, exactly one "
                        f"(got {'both' if args.target_ms is not None else 'neither'})")
    settings = SearchSettings(space=args.space, table=args.table, target_ms=args.target_ms,
                              target_model=args.target_model, feedback=args.feedback,
                              feedback_seconds=args.feedback_seconds, data=args.data,
                              out=args.out, minutes=args.minutes, steps=args.steps, seed=args.seed,
                              reward=args.reward, beta=args.beta, w=args.w, two_stage=not args.one_stage,
                              width_mult=args.width_mult, batch_size=args.batch_size or 64,
                              img_size=args.input_size[0] if args.input_size else 64, teacher=args.teacher,
                              checkpoint_seconds=args.checkpoint_seconds, coarse_op_mix=args.coarse_op_mix,
                              sandwich=args.sandwich, rerank=args.rerank, rerank_epochs=args.rerank_epochs,
                              rerank_share=args.rerank_share, rerank_window=args.rerank_window)
    res = run_search(settings, progress=not args.quiet)
    emit_json(args, {"spec": str(res.spec), "predicted_ms": res.predicted_ms, "target_ms": res.target_ms,
                     "measured": res.measured, "val_top1_supernet": res.val_top1, "steps": res.steps,
                     "seconds": res.seconds, "out": str(res.out), "rerank": res.rerank})
    if not json_only(args):
        if res.rerank:
            from ..archs.spec import model_label

            rr = res.rerank
            print(f"re-ranked {len(rr['results'])} of {len(rr['candidates'])} candidates ({rr['epochs']} epoch(s) "
                  f"each, alone; held-out top-1):")
            for r, ms in zip(rr["results"], rr["predicted_ms"]):
                mark = "  <- found" if r["spec"] == rr["pick"] else ""
                print(f"  {r['heldout_top1']:6.2f}%  {ms:.3f} ms  {model_label(r['spec'])}{mark}")
            for key in ("note", "stopped"):
                if rr.get(key):
                    print(f"  {rr[key]}")
        m = res.measured
        measured = (f"; measured {m['measured_ms']:.3f} ms, {100 * (m['measured_vs_target'] - 1):+.1f}% vs the "
                    + ("reference measured beside it" if "reference_measured_ms" in m else "target")) if m else ""
        print(f"found in {res.steps} steps ({res.seconds / 60:.1f} min): predicted {res.predicted_ms:.3f} ms "
              f"(target {res.target_ms:.4g}){measured}, supernet top-1 {100 * res.val_top1:.1f}% on val; wrote "
              f"{res.out}/found.txt, found.json, history.json, search.png")
        print(str(res.spec))
    return 0


def _cmd_adapt(args: argparse.Namespace) -> int:
    from ..search.netadapt import AdaptSettings, adapt

    settings = AdaptSettings(table=args.table, target_ms=args.target_ms, data=args.data, out=args.out,
                             short_steps=args.short_steps, long_steps=args.long_steps, max_iters=args.max_iters,
                             reduction=args.reduction, decay=args.decay, batch_size=args.batch_size or 64,
                             img_size=args.input_size[0] if args.input_size else None, lr=args.lr, seed=args.seed)
    res = adapt(args.checkpoint, settings, weights=args.weights, progress=not args.quiet)
    emit_json(args, {"spec": str(res.spec), "start_ms": res.start_ms, "predicted_ms": res.predicted_ms,
                     "measured_ms": res.measured_ms, "val_top1": res.val_top1, "start_val_top1": res.start_val_top1,
                     "iterations": res.iterations, "checkpoint": str(res.checkpoint), "out": str(res.out),
                     "notes": res.notes})
    if not json_only(args):
        for note in res.notes:
            print(f"note: {note}", file=sys.stderr)
        print(f"adapted in {res.iterations} iteration(s): {res.start_ms:.3f} -> {res.predicted_ms:.3f} ms predicted, "
              f"{res.measured_ms:.3f} ms measured (target {args.target_ms:g}); val top-1 "
              f"{100 * res.start_val_top1:.1f}% -> {100 * res.val_top1:.1f}%; wrote {res.checkpoint}, "
              f"{res.out}/adapted.txt, adapted.json, history.json")
        print(str(res.spec))
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("search", help="platform-aware architecture search (spaces, ...)",
                              description="Architecture search over a UIB search space (MobileNetV4's TuNAS "
                                          "setting): 'spaces' lists the search spaces.")
    sub = p.add_subparsers(dest="search_command", metavar="WHAT")
    p.set_defaults(func=lambda args: (p.print_help(file=sys.stderr), 2)[1])

    s = sub.add_parser("spaces", help="list the search spaces (size, decisions, the model each contains)",
                       description="List the shipped search spaces: searched stages, decisions, the number of "
                                   "distinct architectures and the hand-designed model each contains (checked "
                                   "by encoding its spec). --show NAME_OR_JSON prints a space in full.")
    s.add_argument("--show", nargs="+", metavar="SPACE", default=[],
                   help="print these spaces in full (shipped names or .json space files)")
    add_json(s, "the spaces")
    s.set_defaults(func=_cmd_spaces)

    from ..search.latency import PRECISIONS, RUNTIMES
    t = sub.add_parser("table", help="measure a space's latency table in a runtime (resumable)",
                       description="Measure every distinct part (stem, block choice, head; at its input shape) of "
                                   "a search space once in the runtime the model will ship on: each exported "
                                   "alone and run, as bench does; mean, spread and median stored. Then a few whole "
                                   "networks fit the per-network overhead. 'roofline' fills the table from the "
                                   "roofline model at a ridge point instead (no device). The table is rewritten "
                                   "after every entry: run the same command again to resume.")
    t.add_argument("--space", required=True, help="a shipped space (mobilenets search spaces) or a .json space file")
    t.add_argument("--runtime", required=True, choices=list(RUNTIMES),
                   help="ort (ONNX Runtime), executorch (XNNPACK), litert, or roofline")
    t.add_argument("--precision", choices=PRECISIONS, default="fp32", help="fp32 (default) or int8")
    t.add_argument("--threads", type=int, default=1, help="runtime threads (default 1)")
    add_input_size(t, default=(224, 224), help="input resolution (default 224; square)")
    t.add_argument("--out", required=True, metavar="TABLE.json", help="the table (resumed when it exists)")
    t.add_argument("--width-mult", type=float, default=None, help="scale the space's channels (e.g. 0.5)")
    t.add_argument("--num-classes", type=int, default=1000, help="classifier outputs of the head (default 1000)")
    t.add_argument("--fit-networks", type=int, default=5,
                   help="whole networks measured to fit the per-network overhead (default 5)")
    t.add_argument("--seconds", type=float, default=0.5, help="timing per entry in seconds (default 0.5)")
    t.add_argument("--ridge-point", type=float, default=None, help="roofline: the ridge point, MACs/byte (default 0: "
                                                                  "compute bound)")
    t.add_argument("--peak-macs", type=float, default=None, help="roofline: peak MAC/s (default 1e12)")
    t.add_argument("--calibrate", action="store_true",
                   help="roofline: measure this machine's peak MAC/s (and ridge point, unless --ridge-point) "
                        "with --threads threads, as mobilenets roofline's calibration does")
    t.add_argument("--seed", type=int, default=0, help="seed of the random networks of the overhead fit")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    add_json(t, "the summary")
    t.set_defaults(func=_cmd_table)

    pr = sub.add_parser("predict", help="predict (and measure) architectures' latency from a table",
                        description="Predicted ms of each model name or spec string (the sum of its parts in the "
                                    "table plus the fitted overhead); --measure adds the measured ms in the "
                                    "table's runtime; --random N adds N random architectures of the table's "
                                    "space (with --measure: the predictor's error and rank correlation).")
    pr.add_argument("models", nargs="*", metavar="MODEL_OR_SPEC", help="registry names, spec strings, .json specs")
    pr.add_argument("--table", required=True, metavar="TABLE.json", help="a table from mobilenets search table")
    pr.add_argument("--measure", action="store_true", help="also measure each in the table's runtime")
    pr.add_argument("--random", type=int, default=0, metavar="N", help="add N random architectures of the space")
    pr.add_argument("--seed", type=int, default=0, help="seed of --random")
    pr.add_argument("--seconds", type=float, default=1.0, help="timing per measured network (default 1)")
    add_json(pr, "the predictions")
    pr.set_defaults(func=_cmd_predict)

    from ..search.run import REWARDS
    r = sub.add_parser("run", help="TuNAS search: supernet on your data, controller toward a latency target",
                       description="Train the space's weight-sharing supernet on DATA while a REINFORCE controller "
                                   "learns the most accurate architecture at the latency target (TuNAS's absolute "
                                   "reward by default; MobileNetV4's two stages, coarse then fine). Writes the found "
                                   "spec (found.txt, found.json), history.json (every step and the controller's "
                                   "probabilities) and search.png to --out, and prints the spec string as the last "
                                   "line. Resumes from --out/search.pt (run the same command again).")
    r.add_argument("--space", required=True, help="a shipped space or a .json space file")
    r.add_argument("--table", required=True, metavar="TABLE.json", help="the space's latency table (search table)")
    r.add_argument("--target-ms", type=float, default=None, help="the latency target in the table's runtime (ms)")
    r.add_argument("--target-model", default=None, metavar="MODEL_OR_SPEC",
                   help="instead of --target-ms: match this model's latency (a registry name, spec string or .json "
                        "spec; predicted by the table, or with --feedback measured beside the found ones)")
    r.add_argument("--feedback", type=int, default=0, metavar="N",
                   help="measure the controller's most likely architecture N times per stage in the table's runtime "
                        "and correct the table's predictions by it; the found one is measured too (default 0: "
                        "the table alone). Costs about 15 s of export per network measured")
    r.add_argument("--feedback-seconds", type=float, default=1.0, help="timing per network measured (default 1)")
    r.add_argument("--data", default="digits", help="digits (default), fake, or an image folder")
    r.add_argument("--out", required=True, metavar="DIR", help="output folder (a search there is resumed)")
    r.add_argument("--minutes", type=float, default=60.0, help="wall-time budget (default 60)")
    r.add_argument("--steps", type=int, default=None, help="search steps (default: as many as --minutes allows)")
    r.add_argument("--seed", type=int, default=0, help="seed: the same seed and steps give the same search")
    r.add_argument("--reward", choices=REWARDS, default="absolute",
                   help="absolute: Q + beta |T/T0 - 1| (TuNAS, default); mnas: Q (T/T0)^w (MnasNet)")
    r.add_argument("--beta", type=float, default=-0.10, help="absolute reward's beta (default -0.10)")
    r.add_argument("--w", type=float, default=-0.07, help="MnasNet reward's exponent (default -0.07)")
    r.add_argument("--one-stage", action="store_true", help="search every decision at once (no coarse/fine)")
    r.add_argument("--width-mult", type=float, default=None, help="the space's width, as its table was built")
    add_batch_size(r, help="batch size (default 64)")
    add_input_size(r, default=None, help="training resolution (default 64; square)")
    r.add_argument("--teacher", default=None, help="distil from this checkpoint or model name (soft labels)")
    r.add_argument("--checkpoint-seconds", type=float, default=30.0, help="checkpoint interval (default 30 s)")
    add_torch_threads(r)
    r.add_argument("--coarse-op-mix", type=float, default=0.5,
                   help="coarse stage: the chance that a block's weight step runs a random op of the full space "
                        "instead of IB k3, so the fine stage starts from trained ops (default 0.5; 0: as in MNv4)")
    r.add_argument("--sandwich", action="store_true",
                   help="each weight step also trains the whole supernet on the same batch (BigNAS's sandwich "
                        "rule): deep blocks train every step, not only on deep paths (about 2x the step cost)")
    r.add_argument("--rerank", type=int, default=0, metavar="K",
                   help="after the search, train K candidates of the final controller (within --rerank-window of "
                        "the target) alone for --rerank-epochs each and keep the best on the held-out split "
                        "(MnasNet's proxy training; default 0: the controller's pick)")
    r.add_argument("--rerank-epochs", type=int, default=2, help="epochs per re-ranked candidate (default 2)")
    r.add_argument("--rerank-share", type=float, default=0.5,
                   help="share of --minutes kept for re-ranking (default 0.5)")
    r.add_argument("--rerank-window", type=float, default=0.03,
                   help="candidates' predicted latency within this fraction of the target (default 0.03)")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    add_json(r, "the result")
    r.set_defaults(func=_cmd_run)

    a = sub.add_parser("adapt", help="NetAdapt: shrink a trained model layer by layer to a latency target",
                       description="NetAdapt (Yang et al. 2018): from a trained model, repeatedly cut the filters of "
                                   "the one layer (a width group tied by shortcuts, a block's expansion, the head's "
                                   "hidden width) whose cut loses the least accuracy per millisecond, each proposal "
                                   "fine-tuned briefly and scored on a held-out split, until the latency predicted "
                                   "from the table and then the latency measured in its runtime meet the target; a "
                                   "long fine-tune ends it. Widths the table lacks are measured and added to it. "
                                   "Writes adapted.pt (loads in mobilenets eval / model_from_checkpoint), "
                                   "adapted.txt / .json (the spec) and history.json (every iteration) to --out, and "
                                   "prints the spec string as the last line. Resumes from --out/adapt.pt.")
    a.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a training checkpoint (best.pt), or a model name / spec string with --weights")
    a.add_argument("--weights", default=None, metavar="FILE",
                   help="weights of a CHECKPOINT given by name or spec string (timm / torchvision / ours)")
    a.add_argument("--table", required=True, metavar="TABLE.json", help="a latency table (search table); widths it "
                                                                       "lacks are measured and added to it")
    a.add_argument("--target-ms", type=float, required=True, help="the latency target in the table's runtime (ms)")
    a.add_argument("--data", default="digits", help="digits (default), fake, or an image folder")
    a.add_argument("--out", default="adapt", metavar="DIR", help="output folder (default ./adapt; resumed)")
    a.add_argument("--short-steps", type=int, default=50, help="fine-tuning steps per proposal (default 50)")
    a.add_argument("--long-steps", type=int, default=500, help="fine-tuning steps at the end (default 500)")
    a.add_argument("--max-iters", type=int, default=50, help="at most this many layer cuts (default 50)")
    a.add_argument("--reduction", type=float, default=0.05,
                   help="first iteration's latency cut, a fraction of the starting latency (default 0.05)")
    a.add_argument("--decay", type=float, default=0.96, help="the cut's decay per iteration (default 0.96)")
    a.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate (default: the recipe's)")
    a.add_argument("--seed", type=int, default=0, help="seed of the splits, batches and fine-tuning")
    add_batch_size(a, help="batch size (default 64)")
    add_input_size(a, default=None, help="fine-tuning resolution (default: the checkpoint's recipe's, else 64)")
    a.add_argument("--quiet", action="store_true", help="no progress output")
    add_json(a, "the result")
    a.set_defaults(func=_cmd_adapt)
