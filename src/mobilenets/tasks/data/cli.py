"""``mobilenets data``: detection and segmentation data from the command line.

``mobilenets data digit-scenes --format coco|yolo|voc --out DIR`` writes the built-in scenes
(train and val) in the COCO or the Ultralytics YOLO layout (detection), or as a VOC-style
segmentation folder (class masks), with a progress bar (tqdm when installed) and a summary line. ``--input-size N | H W`` (alias ``--size``) and ``--json [FILE]``
are the shared options of :mod:`mobilenets.clitools`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ...clitools import UserError, add_input_size, add_json, emit_json, json_only


def _cmd_digit_scenes(args: argparse.Namespace) -> int:
    from ...train.reporting import progress_bar
    from .formats import write_coco, write_yolo
    from .scenes import DigitScenes
    from .segmentation import SceneSegmentation
    from .writers import write_voc

    for flag, n in (("--train-images", args.train_images), ("--val-images", args.val_images)):
        if n < 0:
            raise UserError(f"{flag} must be >= 0, got {n}")
    if args.train_images + args.val_images == 0:
        raise UserError("nothing to write: --train-images and --val-images are both 0")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    writer = {"coco": write_coco, "yolo": write_yolo, "voc": write_voc}[args.format]
    scenes = SceneSegmentation if args.format == "voc" else DigitScenes
    counted = "pixels" if args.format == "voc" else "boxes"  # digit pixels of the masks / digit boxes
    quiet = args.quiet or json_only(args)
    t0 = time.perf_counter()
    summary: dict = {"format": args.format, "out": str(out), "size": list(args.input_size),
                     "seed": args.seed, "splits": {}}
    for split, n in (("train", args.train_images), ("val", args.val_images)):
        if n == 0:
            continue
        ds = _Counting(scenes(split, size=tuple(args.input_size), num_images=n, seed=args.seed))
        bar = progress_bar(n, f"digit-scenes {split}", enabled=not quiet)
        try:
            path = writer(ds, out, split, progress=bar.update if bar else None)
        finally:
            if bar:
                bar.close()
        summary["splits"][split] = {"images": n, counted: ds.count, "file": str(path)}
    seconds = time.perf_counter() - t0
    summary["seconds"] = round(seconds, 2)
    emit_json(args, summary)
    if not json_only(args):
        h, w = args.input_size
        what = "digit pixels" if counted == "pixels" else "boxes"
        parts = ", ".join(f"{s} {v['images']} images / {v[counted]} {what}" for s, v in summary["splits"].items())
        entry = {"coco": "annotations/instances_<split>.json", "yolo": "data.yaml",
                 "voc": "ImageSets/Segmentation/<split>.txt, labelmap.txt"}[args.format]
        print(f"wrote digit-scenes {h}x{w} (10 classes, seed {args.seed}) as {args.format.upper()} to {out}: "
              f"{parts}; {entry}; {seconds:.1f} s")
    return 0


class _Counting:
    """A dataset view counting what the items read through it hold: boxes (detection targets)
    or digit pixels (segmentation masks: neither background nor ignore)."""

    def __init__(self, dataset) -> None:
        self.dataset, self.classes, self.count = dataset, dataset.classes, 0
        self.colors = getattr(dataset, "colors", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = self.dataset[index]
        target = item[1]
        if isinstance(target, dict):
            self.count += len(target["labels"])
        else:
            self.count += int(((target > 0) & (target < len(self.classes))).sum())
        return item


def register(subparsers) -> None:
    """Add ``data`` (with ``digit-scenes``) to an ``argparse`` subparsers object."""
    p = subparsers.add_parser("data", help="task data: write the built-in digit-scenes as COCO / YOLO / VOC",
                              description="Detection and segmentation data. 'digit-scenes' writes the built-in "
                                          "scenes (scikit-learn digits pasted on cluttered canvases, exact boxes "
                                          "and masks) in the COCO or the Ultralytics YOLO layout, or as a "
                                          "VOC-style segmentation folder.")
    sub = p.add_subparsers(dest="data_command", metavar="WHAT")
    p.set_defaults(func=lambda args: (p.print_help(file=sys.stderr), 2)[1])

    d = sub.add_parser("digit-scenes", help="write the built-in scenes (train and val) as COCO, YOLO or VOC",
                       description="Write digit-scenes train and val splits: COCO (images/<split>/, "
                                   "annotations/instances_<split>.json with boxes and RLE masks), YOLO "
                                   "(images/<split>/, labels/<split>/*.txt, data.yaml) or VOC segmentation "
                                   "(JPEGImages/<split>/*.png, SegmentationClass/<split>/*.png palette class "
                                   "masks, ImageSets/Segmentation/<split>.txt, labelmap.txt). Each split is "
                                   "written atomically; an existing split in DIR is replaced.")
    d.add_argument("--format", choices=("coco", "yolo", "voc"), required=True,
                   help="output layout: coco / yolo (detection) or voc (segmentation)")
    d.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    d.add_argument("--train-images", type=int, default=2000, metavar="N", help="train images (default 2000)")
    d.add_argument("--val-images", type=int, default=500, metavar="N", help="val images (default 500)")
    add_input_size(d, default=(320, 320), help="canvas size (default 320)")
    d.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json(d, "the summary")
    d.set_defaults(func=_cmd_digit_scenes)


add_commands = register  # the name the other packages' cli modules use
