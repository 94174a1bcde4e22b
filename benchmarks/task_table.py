"""Params and MACs of the task models on every backbone (the README's detection and segmentation
tables).

    python benchmarks/task_table.py --task detection      # markdown table on stdout (~5 min on 2 cores)
    python benchmarks/task_table.py --task segmentation --json out.json

Detection, at 320x320: one image through backbone, neck and heads (torch.utils.flop_counter,
FLOPs / 2; NMS and box decoding not counted; Faster R-CNN's box head over the proposals that
image yields), as torchvision reports its detectors' GFLOPs. Faster R-CNN is the ``_320_fpn``
variant; RetinaNet is measured with ``min_size=max_size=320`` (its registered default resizes to
800-1333 like torchvision's).

Segmentation, at 520x520 (torchvision's evaluation size): backbone (output stride 16) and head,
without the aux head (what is deployed); bilinear upsampling not counted.

Params: training state with BatchNorm2d (built without weights).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

import mobilenets
from mobilenets.tasks.cost import COST_SIZE, task_macs

# task -> (column key, header, name pattern, builder options)
COLUMNS = {
    "detection": [("ssdlite", "SSDLite320", "ssdlite320_{}", {}),
                  ("fasterrcnn_320", "Faster R-CNN 320 FPN", "fasterrcnn_{}_320_fpn", {}),
                  ("retinanet_320", "RetinaNet FPN", "retinanet_{}_fpn", {"min_size": 320, "max_size": 320})],
    "segmentation": [("lraspp", "LR-ASPP", "lraspp_{}", {}), ("deeplabv3", "DeepLabV3", "deeplabv3_{}", {}),
                     ("fcn", "FCN", "fcn_{}", {})],
}


def rows(task, backbones):
    for b in backbones:
        row = {"backbone": b, "family": mobilenets.get_entry(b).family}
        for key, _, pattern, kw in COLUMNS[task]:
            torch.manual_seed(0)
            m = mobilenets.create_model(pattern.format(b), **kw).eval()
            row[f"{key}_params_m"] = round(mobilenets.count_params(m) / 1e6, 3)
            row[f"{key}_macs_m"] = round(task_macs(m, task) / 1e6, 1)
        print(f"{b}: done", file=sys.stderr, flush=True)
        yield row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=sorted(COLUMNS), default="detection")
    p.add_argument("--backbones", nargs="*", default=None, help="default: every classification backbone")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    backbones = args.backbones or mobilenets.list_models(task="classification")
    table = list(rows(args.task, backbones))
    at = COST_SIZE[args.task]
    cols = COLUMNS[args.task]
    print("| backbone | " + " | ".join(f"{h} params (M) | MACs @{at} (M)" for _, h, _, _ in cols) + " |")
    print("|---" * (1 + 2 * len(cols)) + "|")
    for r in table:
        print(f"| `{r['backbone']}` | " + " | ".join(f"{r[k + '_params_m']:.3f} | {r[k + '_macs_m']:.0f}"
                                                     for k, _, _, _ in cols) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
