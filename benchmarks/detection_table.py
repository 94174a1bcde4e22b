"""Params and MACs at 320x320 of the detectors on every backbone (the README's detection table).

    python benchmarks/detection_table.py                 # markdown table on stdout (~5 min on 2 cores)
    python benchmarks/detection_table.py --json out.json

MACs: one 320x320 image through backbone, neck and heads (torch.utils.flop_counter, FLOPs / 2;
NMS and box decoding not counted; Faster R-CNN's box head over the proposals that image yields),
as torchvision reports its detectors' GFLOPs. Faster R-CNN is the ``_320_fpn`` variant; RetinaNet
is measured with ``min_size=max_size=320`` (its registered default resizes to 800-1333 like
torchvision's). Params: training state with BatchNorm2d (built without weights).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

import mobilenets
from mobilenets.tasks.detection.cost import detector_macs


def rows(backbones):
    for b in backbones:
        row = {"backbone": b, "family": mobilenets.get_entry(b).family}
        for key, name, kw in (("ssdlite", f"ssdlite320_{b}", {}),
                              ("fasterrcnn_320", f"fasterrcnn_{b}_320_fpn", {}),
                              ("retinanet_320", f"retinanet_{b}_fpn", {"min_size": 320, "max_size": 320})):
            torch.manual_seed(0)
            m = mobilenets.create_model(name, **kw).eval()
            row[f"{key}_params_m"] = round(mobilenets.count_params(m) / 1e6, 3)
            row[f"{key}_macs_m"] = round(detector_macs(m) / 1e6, 1)
        print(f"{b}: done", file=sys.stderr, flush=True)
        yield row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", nargs="*", default=None, help="default: every classification backbone")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    backbones = args.backbones or mobilenets.list_models(task="classification")
    table = list(rows(backbones))
    print("| backbone | SSDLite320 params (M) | MACs (M) | Faster R-CNN 320 FPN params (M) | MACs (M) "
          "| RetinaNet FPN params (M) | MACs @320 (M) |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| `{r['backbone']}` | {r['ssdlite_params_m']:.3f} | {r['ssdlite_macs_m']:.0f} | "
              f"{r['fasterrcnn_320_params_m']:.3f} | {r['fasterrcnn_320_macs_m']:.0f} | "
              f"{r['retinanet_320_params_m']:.3f} | {r['retinanet_320_macs_m']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
