"""The digit-scenes detection goal (issue 13): SSDLite initialised from the digits classifier of
the same backbone, trained on the built-in digit-scenes on this machine's CPU; reports val mAP50,
mAP@[.5:.95] and the wall time of each step.

    python benchmarks/train_detection.py                                  # MNv4-Conv-S (the goal model)
    python benchmarks/train_detection.py --backbones mobilenetv4_conv_small mobilenetv3_large_100 mobileformer_151m
    python benchmarks/train_detection.py --epochs 8 --threads 2 --out runs/det-goal

For each backbone: (1) ``mobilenets train --model <backbone>`` (the digits recipe, 64 px; reused when
``<out>/<backbone>/cls/best.pt`` exists), (2)
``mobilenets train --task detect --model ssdlite320_<backbone> --set pretrained=<1>/best.pt`` with
the ``digit_scenes`` recipe. The goal: mAP50 >= 0.90 within 20 minutes for step (2) on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from goal_runs import EXE, digits_classifier, run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", nargs="*", default=["mobilenetv4_conv_small"])
    p.add_argument("--epochs", type=int, default=None, help="detection epochs (default: the recipe's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runs/detection-goal")
    args = p.parse_args(argv)
    results = []
    for b in args.backbones:
        out = Path(args.out) / b
        cls_best, cls_min = digits_classifier(b, out / "cls", args.threads)
        det_cmd = EXE + ["train", "--task", "detect", "--model", f"ssdlite320_{b}", "--set",
                         f"pretrained={cls_best}", "--out", str(out / "det"), "--no-progress",
                         "--threads", str(args.threads)]
        if args.epochs:
            det_cmd += ["--set", f"epochs={args.epochs}"]
        det_time = run(det_cmd)
        m = json.loads((out / "det" / "metrics.json").read_text())
        best = max(m["history"], key=lambda h: h.get("val_map", -1))
        final = m["history"][-1]
        row = {"backbone": b, "classifier_min": cls_min, "detector_min": round(det_time / 60, 1),
               "epochs": len(m["history"]), "final_map50": final.get("val_map50"), "final_map": final.get("val_map"),
               "best_map50": best.get("val_map50"), "best_map": best.get("val_map")}
        results.append(row)
        print(json.dumps(row), flush=True)
    print("\n| SSDLite320 on | classifier (min) | detector (min) | epochs | val mAP50 | val mAP@[.5:.95] |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| `{r['backbone']}` | {r['classifier_min']} | {r['detector_min']} | {r['epochs']} | "
              f"{r['final_map50']:.3f} | {r['final_map']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
