"""``mobilenets data``: detection and segmentation data from the command line.

``mobilenets data digit-scenes --format coco|yolo|voc --out DIR`` writes the built-in scenes
(train and val) in the COCO or the Ultralytics YOLO layout (detection), or as a VOC-style
segmentation folder (class masks), with progress on stderr (:mod:`mobilenets.progress`: a bar
on a terminal, a line per quarter otherwise) and a summary line; ``--workers N`` processes draw and
encode the images (the files are the same whatever N). ``--input-size N | H W`` (alias ``--size``)
and ``--json [FILE]`` are the shared options of :mod:`mobilenets.cli.common`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .common import UserError, add_input_size, add_json, emit_json, json_only
from ..data import default_workers


def _cmd_digit_scenes(args: argparse.Namespace) -> int:
    from ..progress import progress_bar
    from ..data.formats import write_coco, write_yolo
    from ..data.scenes import DigitScenes
    from ..data.segmentation import SceneSegmentation
    from ..data.writers import write_voc

    for flag, n in (("--train-images", args.train_images), ("--val-images", args.val_images)):
        if n < 0:
            raise UserError(f"{flag} must be >= 0, got {n}")
    if args.train_images + args.val_images == 0:
        raise UserError("nothing to write: --train-images and --val-images are both 0")
    workers = default_workers() if args.workers is None else args.workers
    if workers < 0:
        raise UserError(f"--workers must be >= 0 (0: write in this process), got {workers}")
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
        ds = scenes(split, size=tuple(args.input_size), num_images=n, seed=args.seed)
        bar = progress_bar(n, f"digit-scenes {split}", enabled=not quiet)
        try:
            path = writer(ds, out, split, progress=bar.update if bar else None, workers=workers)
        finally:
            if bar:
                bar.close()
        summary["splits"][split] = {"images": n, counted: _count_written(args.format, out, split, path),
                                    "file": str(path)}
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


def _count_written(fmt: str, out: Path, split: str, path: Path) -> int:
    """What a written split holds, read back from its files: boxes (COCO annotations, YOLO label
    lines) or digit pixels (VOC masks: neither background nor ignore)."""
    if fmt == "coco":
        return len(json.loads(path.read_text(encoding="utf-8"))["annotations"])
    if fmt == "yolo":
        return sum(sum(1 for line in p.read_text().splitlines() if line.strip())
                   for p in (out / "labels" / split).glob("*.txt"))
    import numpy as np
    from PIL import Image

    from ..data.scenes import DIGIT_CLASSES

    total = 0
    for p in (out / "SegmentationClass" / split).glob("*.png"):
        with Image.open(p) as im:
            m = np.asarray(im)
        total += int(np.count_nonzero((m > 0) & (m < len(DIGIT_CLASSES))))
    return total


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
    d.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes drawing and encoding the images (default: the CPU count, at most 4; "
                        "0: this process); the files are the same whatever N")
    d.add_argument("--quiet", action="store_true", help="no progress output")
    add_json(d, "the summary")
    d.set_defaults(func=_cmd_digit_scenes)


add_commands = register  # the name the other packages' cli modules use
