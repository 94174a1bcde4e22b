"""``mobilenets train | eval | predict``: the training commands.

The main CLI wires them in with :func:`add_commands`; ``python -m mobilenets.train`` (and so
``torchrun --nproc_per_node=2 -m mobilenets.train ...``) runs them directly. Every handler returns
an exit code; user errors print their message on stderr and return 2
(:func:`mobilenets.cli.common.run_handler`). ``train`` and ``eval`` take the shared
``--input-size N`` (square; old spelling ``--img-size``) and ``--batch-size`` (alias ``--batch``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Optional, Sequence

from ..archs.spec import model_label
from .common import (UserError, add_batch_size, add_input_size, add_torch_threads, run_handler, set_torch_threads,
                     square_size)

# recipe fields with a shared CLI flag (cli.common) instead of a generated one
_SHARED_FIELDS = ("img_size", "batch_size")


def _recipe_flags(p: argparse.ArgumentParser) -> None:
    from ..train.recipe import Recipe
    g = p.add_argument_group("recipe fields (override the chosen --recipe; same as --set FIELD=VALUE)")
    for f in fields(Recipe):
        flag = "--" + f.name.replace("_", "-")
        if flag in ("--model", "--teacher", "--task") or f.name in _SHARED_FIELDS:
            continue
        g.add_argument(flag, dest=f"r_{f.name}", default=None, metavar="V",
                       help=f"default {f.default if not callable(getattr(f, 'default_factory', None)) else '...'}")


def _flag_overrides(args: argparse.Namespace) -> dict:
    """Recipe fields given as flags: the generated ``--<field>`` ones and the shared size / batch."""
    over = {k[2:]: v for k, v in vars(args).items() if k.startswith("r_") and v is not None}
    if args.input_size is not None:
        over["img_size"] = square_size(args.input_size, "train")
    if args.batch_size is not None:
        over["batch_size"] = args.batch_size
    return over


def _base_recipe(args: argparse.Namespace):
    """``--recipe``, else the one made for a built-in ``--data`` (``digit-clutter`` ->
    ``digit_clutter``), else the named recipe ``--task`` starts from (classify's by default)."""
    from ..train.recipes import get_recipe, recipe_for_data
    from ..train.task import get_task
    task = args.task or "classify"
    return get_recipe(args.recipe or recipe_for_data(task, args.data) or get_task(task).default_recipe)


def _training_recipe(args: argparse.Namespace):
    from ..train.recipe import apply_overrides
    from ..train.task import get_task
    r = _base_recipe(args)
    task = get_task(r.task)
    if args.task and r.task != args.task:
        raise UserError(f"recipe {args.recipe!r} is for task {r.task!r}, not {args.task!r}; "
                        f"see --list-recipes")
    over: dict = {}
    if args.model:
        over["model"] = args.model
    if args.data:
        over.update(task.data_option(args.data))
    over.update(_flag_overrides(args))
    if "img_size" in over and r.crop_size is not None and r.crop_size > over["img_size"]:
        over["crop_size"] = over["img_size"]  # a recipe's crop is for its own size: never beyond --input-size
    if args.teacher:
        over["teacher"] = args.teacher
    r = apply_overrides(r, {k: v for k, v in over.items() if k not in ("model", "data_dir", "teacher", "dataset")})
    r = r.replace(**{k: v for k, v in over.items() if k in ("model", "data_dir", "teacher", "dataset")})
    r = apply_overrides(r, args.set or [])
    set_fields = {s.split("=", 1)[0].strip().replace("-", "_") for s in args.set or []}
    size_given = "img_size" in over or "img_size" in set_fields
    from ..train.qat import qat_recipe
    # a QAT run is a fine-tune: its defaults where the command line left a field alone
    return qat_recipe(task.fit_recipe(_base_recipe(args), r, size_given), set(over) | set_fields)


def _cmd_train(args: argparse.Namespace) -> int:
    from ..train.loop import train
    from ..train.recipe import Recipe
    from ..train.recipes import RECIPES

    if args.list_recipes:
        for name, r in RECIPES.items():
            print(f"{name:16s} {r.task:8s} {r.model:36s} {r.opt:7s} lr {r.lr:<8.4g} {r.sched:7s} "
                  f"{r.epochs:4d} epochs  {r.img_size}px")
        return 0
    set_torch_threads(args)
    if args.resume:
        from ..train.checkpoint import load_checkpoint
        ck = load_checkpoint(args.resume)
        from ..train.recipe import apply_overrides
        r = Recipe.from_dict(ck.get("recipe") or {})
        r = apply_overrides(apply_overrides(r, _flag_overrides(args)), args.set or [])
        out = Path(args.out) if args.out else Path(args.resume).parent
    else:
        r = _training_recipe(args)
        out = Path(args.out) if args.out else Path("runs") / f"{model_label(r.model)}-{r.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    r.validate()
    if args.print_recipe:
        for k, v in r.to_dict().items():
            print(f"{k} = {v}")
        return 0
    res = train(r, out, resume=args.resume, progress=not args.no_progress)
    if res.exit_code != 0:
        return res.exit_code
    import os
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    from ..train.task import get_task
    task = get_task(r.task)
    mins, secs = divmod(res.elapsed_s, 60)
    print("\n=== training summary ===")
    print(f"model {r.model} on {r.dataset}, {len(res.history)} epochs in {int(mins)}m{secs:04.1f}s")
    for line in task.summarize(res.final):
        print(line)
    m = task.best_metric
    best = "none" if res.best != res.best else m.format(res.best)  # NaN: no epoch validated
    print(f"best val {m.label} {best} at epoch {res.best_epoch}")
    for k in ("best", "last", "averaged", "metrics_csv", "metrics_json", "curves"):
        if k in res.files:
            print(f"{k:13s} {res.files[k]}")
    return 0


def _checkpoint_task(path: str) -> str | None:
    """The task of a training checkpoint (``None``: not a training checkpoint)."""
    from ..tasks.checkpoint import checkpoint_task
    return checkpoint_task(path)


def _checkpoint_task_of(args: argparse.Namespace):
    """The :class:`~mobilenets.tasks.base.Task` of ``args.checkpoint`` (a plain weights file:
    classification, which takes ``--model``)."""
    from ..train.task import get_task
    return get_task(_checkpoint_task(args.checkpoint) or "classify")


def _cmd_eval(args: argparse.Namespace) -> int:
    task = _checkpoint_task_of(args)
    data = None if args.data == "digits" and task.name != "classify" else args.data  # the run's own val data
    res = task.eval_checkpoint(args.checkpoint, data, batch_size=args.batch_size, use_ema=not args.no_ema,
                               img_size=square_size(args.input_size, "eval"), confusion_png=args.confusion,
                               model_name=args.model, **({"file": args.file} if args.file else {}))
    for line in task.eval_report(args.checkpoint, data, res):
        print(line)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    """Print each image's prediction and, on stderr, one line per image that could not be read
    (the others are still predicted); exit code 2 when any failed, else 0."""
    task = _checkpoint_task_of(args)
    results = task.predict(args.checkpoint, args.images, out_dir=args.out_dir, use_ema=not args.no_ema,
                           topk=args.topk, score_thresh=args.score_thresh, model_name=args.model)
    failed = 0
    for r in results:
        if "error" in r:
            failed += 1
            print(f"mobilenets predict: error: {r['error']}", file=sys.stderr, flush=True)
        else:
            for line in task.show_prediction(r, score_thresh=args.score_thresh):
                print(line)
    if failed:
        print(f"mobilenets predict: {failed} of {len(results)} image(s) could not be read", file=sys.stderr)
    return 2 if failed else 0


def add_commands(subparsers) -> None:
    """Register ``train``, ``eval`` and ``predict`` on an ``add_subparsers()`` object."""
    p = subparsers.add_parser("train", help="train a model (default: mobilenetv4_conv_small on digits)",
                              description="Train a model. Defaults: mobilenetv4_conv_small on the built-in "
                                          "digits dataset with the 'digits' recipe. Distributed: "
                                          "torchrun --nproc_per_node=N -m mobilenets.train ...")
    from ..train.task import task_names
    p.add_argument("--task", choices=task_names(), default=None,
                   help="classify (default), detect or segment; picks the default recipe "
                        "(digits / digit_scenes / digit_scenes_seg)")
    p.add_argument("--recipe", default=None, help="named recipe (see --list-recipes; default: the task's)")
    p.add_argument("--list-recipes", action="store_true", help="list the named recipes and exit")
    p.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")
    p.add_argument("--model", help="model name (default: the recipe's)")
    p.add_argument("--data", help="classify: digits | digit-clutter | fake | PATH to an image folder; "
                                  "detect: digit-scenes | PATH to a COCO or YOLO folder; "
                                  "segment: digit-scenes | PATH to a VOC-style folder")
    p.add_argument("--out", help="output folder (default runs/<model>-<dataset>-<time>)")
    p.add_argument("--resume", help="continue from a last.pt")
    p.add_argument("--teacher", help="distill from a registry name or checkpoint")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override any recipe field")
    add_torch_threads(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_input_size(p, square=True, help="train/eval resolution (default: the recipe's img_size)")
    add_batch_size(p, help="batch size per process (default: the recipe's batch_size)")
    _recipe_flags(p)
    p.set_defaults(func=_cmd_train)

    p = subparsers.add_parser("eval", help="top-1/top-5 and a confusion matrix of a checkpoint "
                                           "(detection: COCO mAP and per-class AP; segmentation: mIoU, "
                                           "pixel accuracy, per-class IoU)")
    p.add_argument("checkpoint")
    p.add_argument("--data", default="digits",
                   help="classification: digits | digit-clutter | fake | PATH to an image folder (default digits); "
                        "detection "
                        "(default: the run's validation data): digit-scenes | PATH to a COCO or YOLO folder with "
                        "the same classes; segmentation (default: the run's validation data): digit-scenes | "
                        "PATH to a VOC-style folder")
    add_batch_size(p, default=128, help="evaluation batch size (default 128)")
    add_input_size(p, square=True, help="resolution (default: the checkpoint's training size)")
    p.add_argument("--model", help="architecture for a plain weights file")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    p.add_argument("--file", metavar="EXPORTED",
                   help="evaluate this export of the checkpoint (.onnx / .pte / .tflite, e.g. INT8) in its runtime "
                        "instead of the eager model, on the same data and preprocessing (a detector: its .pte / "
                        ".tflite network, decode + NMS on the host)")
    p.add_argument("--confusion", help="confusion-matrix PNG path (default next to the checkpoint)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress output (as train's): only the results are printed")
    p.set_defaults(func=_cmd_eval)

    p = subparsers.add_parser("predict", help="top-k classes of image files (detection: boxes drawn on them; "
                                              "segmentation: the mask overlaid, with a legend)")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--score-thresh", type=float, default=0.5, help="detection: lowest score drawn (default 0.5)")
    p.add_argument("--out-dir", help="detection / segmentation: where the drawn images go (default: beside "
                                     "each image)")
    p.add_argument("--model", help="architecture for a plain weights file")
    p.add_argument("--no-ema", action="store_true")
    p.set_defaults(func=_cmd_predict)
    for name in ("train", "eval", "predict"):
        subparsers.choices[name].set_defaults(user_errors=_user_errors())


def _user_errors() -> tuple:
    from ..data import DatasetError
    from ..train.distill import TeacherError
    from ..train.loop import TrainingError
    return (DatasetError, TeacherError, TrainingError)


def handle(args: argparse.Namespace) -> int:
    """Run a parsed command with the shared handling: user errors exit 2 with their message, bugs 1
    with a traceback (:func:`mobilenets.cli.common.run_handler`)."""
    return run_handler(args.func, args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m mobilenets.train [train|eval|predict] ...`` (``train`` when omitted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m mobilenets.train")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_commands(sub)
    if not argv or argv[0] not in ("train", "eval", "predict", "-h", "--help"):
        argv = ["train"] + argv
    args = parser.parse_args(argv)
    return handle(args)
