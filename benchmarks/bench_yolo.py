"""YOLO11 on our backbones (issue 15): Ultralytics' summary lines, the digit-scenes training goal and
ONNX Runtime latency, ours (YOLO11n on MobileNetV4-Conv-S, width 0.75) beside stock YOLO11n.

    python benchmarks/bench_yolo.py --part summary                  # summary lines + what differs (seconds)
    flock /work/bench.lock python benchmarks/bench_yolo.py --part latency     # ORT at 320 and 640, same run
    flock /work/bench.lock python benchmarks/bench_yolo.py --part train --minutes 20   # the goal (~45 min)
    python benchmarks/bench_yolo.py --minutes 1 --train-images 64 --val-images 32 --classifier-epochs 1  # smoke

``--part train``: (1) the digits classifier of the backbone at width 0.75 (``mobilenets train
--model mobilenetv4_conv_small --model-kwargs '{"width_mult": 0.75}'``; ``--pretrained none`` skips it,
``--pretrained PATH`` uses a checkpoint), (2) ``mobilenets data digit-scenes --format yolo`` (2000
train / 500 val scenes, 320 px), (3) ours and (4) stock YOLO11n (its ``yolo11n.yaml``, random init,
nothing downloaded) each trained by Ultralytics with the same ``time=`` budget (``--minutes``; Ultralytics
fits the epoch count and the LR schedule to it after the first epoch), the same data and arguments
(no flips: a mirrored 2 is not a 2). Reports val mAP50 / mAP50-95 (Ultralytics' validator) and wall times.

Ultralytics is kept offline (YOLO_OFFLINE: no DNS probe, no pip auto-install; plots off: no font download;
ONNX export without onnxslim).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

TUTORIAL = "YOLO11-MobileNetV4 summary: 386 layers, 2,173,383 parameters, 5.3 GFLOPs"  # the tutorial's own summary line
OURS = dict(scale="n", backbone="mobilenetv4_conv_small", width=0.75)
#: MobileNetV4-Conv-S's P2..P5 channels at width 1.0 (the tutorial scales these by int(c * factor))
BASE_CHANNELS = [32, 64, 96, 960]


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _leaves(*modules) -> int:
    """Leaf modules of ``modules``, each counted once (how Ultralytics counts "layers")."""
    return len({id(m) for module in modules for m in module.modules() if len(m._modules) == 0})


def part_summary() -> dict:
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.modules import SPPF

    import mobilenets
    from mobilenets.integrations import ultralytics as mu
    from mobilenets.layers import make_divisible

    ours, stock = mu.yolo(**OURS), YOLO("yolo11n.yaml")
    lines = {"ours": mu.summary_line(ours), "stock yolo11n": mu.summary_line(stock), "tutorial (quoted)": TUTORIAL}
    layers, ref_layers = list(ours.model.model), list(stock.model.model)
    bb = layers[0]
    # where the parameters are: backbone, SPPF (reads P5), the rest of neck and head
    split = {"ours": {"backbone": _params(bb), "SPPF": layers[5].np, "rest": sum(m.np for m in layers[6:])},
             "stock yolo11n": {"backbone": sum(m.np for m in ref_layers[:9]), "SPPF": ref_layers[9].np,
                               "rest": sum(m.np for m in ref_layers[10:])}}
    # "layers" in the summary: leaf modules of the whole model, each counted once (the neck's SiLU is one shared
    # module, Ultralytics' Conv.default_act)
    leaves = {"ours": {"total": _leaves(ours.model), "backbone": _leaves(bb), "Index rows": 4,
                       "neck+head": _leaves(*layers[5:])},
              "stock yolo11n": {"total": _leaves(stock.model), "backbone": _leaves(*ref_layers[:9]),
                                "neck+head": _leaves(*ref_layers[9:])}}
    # the tutorial's P5: its model reads the last UIB stage (128 x 0.75 = 96 channels), not the 1x1 conv to
    # 960 x 0.75 = 720 that timm's (and our) feature levels end with: the same model with that P5
    net = mobilenets.create_model("mobilenetv4_conv_small", num_classes=0, width_mult=0.75).eval()
    with torch.no_grad():
        stages = net.stage_outputs(torch.zeros(1, 3, 64, 64))
    p5_block = stages[-2].map.shape[1]
    sppf_block = SPPF(p5_block, layers[5].cv2.conv.out_channels, 5)
    last_conv = _params(bb.body.model.stages[-1])
    without = _params(ours.model) - last_conv - layers[5].np + _params(sppf_block)
    widths = {}
    for w in (0.25, 0.35, 0.5, 0.6, 0.75, 0.9, 1.5):
        widths[w] = {"ours (width_mult, make_divisible)": mu.MobileNetBackbone("mobilenetv4_conv_small", w).width_list,
                     "int(c * factor)": [int(c * w) for c in BASE_CHANNELS],
                     "make_divisible(c * factor)": [make_divisible(c * w) for c in BASE_CHANNELS]}
    return {"lines": lines, "params": split, "leaf_layers": leaves, "p5_channels": bb.width_list[-1],
            "p5_block_channels": p5_block, "params_with_p5_from_last_block": without, "widths": widths}


def print_summary(s: dict) -> None:
    print("\n## Ultralytics' summary lines (model.info(), 640 px)\n")
    for k, v in s["lines"].items():
        print(f"- {k}: `{v}`")
    print("\n| model | backbone params | SPPF params | rest of neck + head |\n|---|---|---|---|")
    for k, v in s["params"].items():
        print(f"| {k} | {v['backbone']:,} | {v['SPPF']:,} | {v['rest']:,} |")
    print(f"\nOur P5 is the {s['p5_channels']}-channel 1x1 conv ending MNv4-Conv-S's feature levels (timm's); "
          f"with P5 read from the last UIB block instead ({s['p5_block_channels']} channels, what the tutorial's "
          f"total implies), the same model has {s['params_with_p5_from_last_block']:,} parameters.")
    print("\nleaf modules ('layers' in the summary):", json.dumps(s["leaf_layers"]))
    print("\n| width | ours P2..P5 | int(c * factor) | make_divisible(c * factor) |\n|---|---|---|---|")
    for w, v in s["widths"].items():
        print(f"| {w} | {v['ours (width_mult, make_divisible)']} | {v['int(c * factor)']} | "
              f"{v['make_divisible(c * factor)']} |")


def _latest_best(run_dir: Path) -> Path:
    found = sorted(run_dir.rglob("best.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no best.pt under {run_dir}")
    return found[-1]


def _data(out: Path, n_train: int, n_val: int, size: int) -> Path:
    data = out / "data"
    yaml_file = data / "data.yaml"
    stamp = data / "counts.json"
    want = {"train": n_train, "val": n_val, "size": size}
    if yaml_file.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == want:
        return yaml_file
    shutil.rmtree(data, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "mobilenets", "data", "digit-scenes", "--format", "yolo", "--out", str(data),
                    "--train-images", str(n_train), "--val-images", str(n_val), "--input-size", str(size)], check=True)
    stamp.write_text(json.dumps(want))
    return yaml_file


def _classifier(out: Path, how: str, epochs, threads: int) -> tuple:
    if how == "none":
        return None, 0.0
    if how != "auto":
        return Path(how), 0.0
    cls_dir = out / "classifier"
    cmd = [sys.executable, "-m", "mobilenets", "train", "--model", OURS["backbone"], "--model-kwargs",
           json.dumps({"width_mult": OURS["width"]}), "--out", str(cls_dir), "--no-progress", "--threads", str(threads)]
    if epochs:
        cmd += ["--epochs", str(epochs)]
    print("$ " + " ".join(cmd), flush=True)
    t = time.time()
    subprocess.run(cmd, check=True)
    return _latest_best(cls_dir), time.time() - t


def part_train(args) -> dict:
    import torch
    from ultralytics import YOLO

    from mobilenets.integrations import ultralytics as mu

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    ckpt, cls_s = _classifier(out, args.pretrained, args.classifier_epochs, args.threads)
    data = _data(out, args.train_images, args.val_images, args.imgsz)
    common = dict(data=str(data), time=args.minutes / 60, epochs=args.max_epochs, imgsz=args.imgsz, batch=args.batch,
                  workers=0, device="cpu", plots=False, fliplr=0.0, project=str((out / "runs").resolve()),
                  exist_ok=True, seed=0, verbose=True)
    rows = {}
    builders = {"ours": lambda: mu.yolo(**OURS, nc=10, pretrained_backbone=ckpt),
                "stock yolo11n": lambda: YOLO("yolo11n.yaml")}
    for name, build in builders.items():
        model = build()
        extra = {} if name == "ours" else {"pretrained": False}
        t = time.time()
        results = model.train(name=name.replace(" ", "-"), **common, **extra)
        wall = time.time() - t
        r = results.results_dict
        rows[name] = {"mAP50": r["metrics/mAP50(B)"], "mAP50-95": r["metrics/mAP50-95(B)"],
                      "epochs": int(model.trainer.epoch) + 1 if getattr(model, "trainer", None) else None,
                      "train_min": round(wall / 60, 2), "summary": mu.summary_line(model),
                      "pretrained_backbone": str(ckpt) if name == "ours" and ckpt else None}
        print(json.dumps({name: rows[name]}), flush=True)
    return {"classifier_min": round(cls_s / 60, 2), "budget_min": args.minutes, "rows": rows,
            "train_images": args.train_images, "val_images": args.val_images, "imgsz": args.imgsz, "batch": args.batch}


def part_latency(args) -> dict:
    import numpy as np
    import torch
    from ultralytics import YOLO

    from mobilenets.deploy.ort import ort_session
    from mobilenets.deploy.timing import interleaved_timings, machine_info, ratio_spread
    from mobilenets.integrations import ultralytics as mu

    out = Path(args.out).resolve() / "onnx"
    out.mkdir(parents=True, exist_ok=True)
    # random weights (the graphs carry no NMS: latency does not depend on them), both with COCO's 80 classes
    models = {"ours": mu.yolo(**OURS), "stock yolo11n": YOLO("yolo11n.yaml")}
    result = {"machine": machine_info(args.threads), "sizes": {}}
    cwd = os.getcwd()
    os.chdir(out)   # Ultralytics writes the export next to the model's (bare) file name
    try:
        for size in args.sizes:
            sessions, x = {}, np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
            for name, model in models.items():
                f = Path(model.export(format="onnx", imgsz=size, simplify=False, device="cpu", verbose=False))
                target = out / f"{name.replace(' ', '-')}-{size}.onnx"
                f.replace(target)
                s = ort_session(target, threads=args.threads, spinning=False)
                feed = {s.get_inputs()[0].name: x}
                s.run(None, feed)
                sessions[name] = (lambda s=s, feed=feed: s.run(None, feed))
            t = interleaved_timings(sessions, seconds=args.seconds)
            lo, hi = ratio_spread(t["ours"], t["stock yolo11n"])
            result["sizes"][size] = {"ours_ms": t["ours"]["ms"], "stock_ms": t["stock yolo11n"]["ms"],
                                     "ratio": t["ours"]["ms"] / t["stock yolo11n"]["ms"], "ratio_iqr": [lo, hi]}
            print(json.dumps({size: result["sizes"][size]}), flush=True)
    finally:
        os.chdir(cwd)
    del torch
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--part", choices=("all", "summary", "train", "latency"), default="all")
    p.add_argument("--minutes", type=float, default=20.0, help="training budget per model (Ultralytics' time=)")
    p.add_argument("--max-epochs", type=int, default=300, help="upper bound; time= sets the real count")
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--val-images", type=int, default=500)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--pretrained", default="auto", help="auto (train the digits classifier) | none | PATH")
    p.add_argument("--classifier-epochs", type=int, default=None, help="default: the digits recipe's (20)")
    p.add_argument("--sizes", type=int, nargs="+", default=[320, 640])
    p.add_argument("--seconds", type=float, default=6.0, help="timing per path and size")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/out/yolo")
    p.add_argument("--json", default=None, help="write the results here (default: OUT/bench_yolo.json)")
    args = p.parse_args(argv)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(args.out).resolve() / "ultralytics-settings"))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    results = {}
    if args.part in ("all", "summary"):
        results["summary"] = part_summary()
        print_summary(results["summary"])
    if args.part in ("all", "latency"):
        results["latency"] = part_latency(args)
        print("\n| size | ours ORT ms | stock YOLO11n ORT ms | ours / stock (IQR) |\n|---|---|---|---|")
        for size, r in results["latency"]["sizes"].items():
            print(f"| {size} | {r['ours_ms']:.1f} | {r['stock_ms']:.1f} | {r['ratio']:.2f} "
                  f"({r['ratio_iqr'][0]:.2f}-{r['ratio_iqr'][1]:.2f}) |")
    if args.part in ("all", "train"):
        results["train"] = part_train(args)
        t = results["train"]
        print(f"\n| model | budget (min) | epochs | train wall (min) | val mAP50 | val mAP50-95 |\n|---|---|---|---|---|---|")
        for name, r in t["rows"].items():
            print(f"| {name} | {t['budget_min']} | {r['epochs']} | {r['train_min']} | {r['mAP50']:.3f} | "
                  f"{r['mAP50-95']:.3f} |")
        ours = t["rows"]["ours"]["mAP50"]
        print(f"\ngoal mAP50 >= 0.90 for ours within {t['budget_min']} min: {'met' if ours >= 0.90 else 'NOT met'} "
              f"({ours:.3f}); classifier {t['classifier_min']} min (separate)")
    path = Path(args.json or Path(args.out) / "bench_yolo.json")
    path.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
