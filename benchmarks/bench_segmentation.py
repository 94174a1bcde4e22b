"""Segmenter latency: ours vs torchvision on the same weights, our ONNX Runtime export; and the
520 vs 320 px trade-off (mIoU and latency) of trained segmenters.

    python benchmarks/bench_segmentation.py --part reference        # ours vs torchvision, batch 1, 520x520, 2 threads
    python benchmarks/bench_segmentation.py --part resolution --runs runs/seg-520   # trained by train_segmentation.py
    python benchmarks/bench_segmentation.py --part ceiling --size 320   # what a perfect stride-4..32 prediction reaches

Part "reference": torchvision's ``lraspp_mobilenet_v3_large`` and ``deeplabv3_mobilenet_v3_large``
(random weights, BatchNorm statistics calibrated on the benchmark batch so the network is well
conditioned; no aux head: what is deployed), their state dict loaded into ours; the logits are
checked to be the same first (1e-4 relative). Timed interleaved on one 520x520 image
(torchvision eager, ours eager, ours fused eager, ours in ONNX Runtime); medians and ratios to
torchvision eager. Goals (issue 14): ours eager / torchvision <= 1.0, ORT at least 2x faster
than torchvision eager.

Part "resolution" (torchvision's MobileNetV3 write-up: running the 520 px models at 320 px costs a
few mIoU and speeds CPU inference by ~60 %): every ``<runs>/<backbone>/<head>/best.pt`` is
evaluated on its validation scenes at 520 and at 320 px (the image and its mask resized, as
torchvision evaluates), and timed (ORT fp32) at both sizes in one interleaved run.

Part "ceiling": the mIoU a PERFECT prediction reaches when it is made at a head's output stride and
upsampled bilinearly to the input size, as the heads do (the validation masks as one-hot class maps,
area-averaged to stride s, upsampled, argmax; the same metric as training). It bounds what any
model can reach on digit-scenes at that stride, whatever the training budget.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import torch

import mobilenets
from mobilenets.deploy import export_onnx, fuse
from mobilenets.deploy.timing import interleaved_timings
from mobilenets.layers.bn_stats import calibrate_bn_stats

REFERENCE = {"lraspp_mobilenetv3_large_100": "lraspp_mobilenet_v3_large",
             "deeplabv3_mobilenetv3_large_100": "deeplabv3_mobilenet_v3_large"}


def _ort_runner(model, x: torch.Tensor, path: Path):
    import onnxruntime as ort
    export_onnx(model, path, input_size=tuple(x.shape[-2:]))  # verified against eager (1e-4 relative)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {"input": x.numpy()}
    return lambda: sess.run(None, feed)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max())


def reference(args, tmp: Path) -> None:
    import torchvision.models.segmentation as tvs
    s = args.size or 520
    print(f"## ours vs torchvision (batch 1, {s}x{s}, {torch.get_num_threads()} threads)\n")
    print("| model | torchvision eager ms | ours eager ms (ratio) | ours fused ms (ratio) | ours ORT ms (ratio) "
          "| torchvision / ORT |")
    print("|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, s, s, generator=g)
    for ours_name, tv_name in REFERENCE.items():
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tv = getattr(tvs, tv_name)(weights=None, weights_backbone=None, num_classes=21).eval()
        calibrate_bn_stats(tv, x, g)
        ours = mobilenets.create_model(ours_name, pretrained=tv.state_dict()).eval()
        fused = fuse(ours)
        with torch.inference_mode():
            d = max(_rel(tv(x)["out"], ours(x)["out"]), _rel(tv(x)["out"], fused(x)["out"]))
        assert d <= 1e-4, f"{ours_name}: logits differ from torchvision's by {d:.2e} (relative)"
        fns = {"tv": lambda: tv(x), "ours": lambda: ours(x), "fused": lambda: fused(x),
               "ort": _ort_runner(ours, x, tmp / f"{ours_name}.onnx")}
        with torch.inference_mode():
            t = interleaved_timings(fns, seconds=args.seconds)
        base = t["tv"]["ms"]
        print(f"| `{ours_name}` | {base:.1f} | {t['ours']['ms']:.1f} ({t['ours']['ms'] / base:.2f}) | "
              f"{t['fused']['ms']:.1f} ({t['fused']['ms'] / base:.2f}) | {t['ort']['ms']:.1f} "
              f"({t['ort']['ms'] / base:.2f}) | {base / t['ort']['ms']:.2f}x |", flush=True)


def resolution(args, tmp: Path) -> None:
    from mobilenets.tasks.segmentation.infer import eval_segmenter_checkpoint, load_segmenter_checkpoint

    hi, lo = args.sizes
    runs = sorted(Path(args.runs).glob("*/*/best.pt"))
    runs = [r for r in runs if r.parent.name != "cls"]
    if not runs:
        raise SystemExit(f"no <backbone>/<head>/best.pt under {args.runs}: run benchmarks/train_segmentation.py first")
    print(f"\n## {hi} vs {lo} px (val digit-scenes; ORT fp32, batch 1, {torch.get_num_threads()} threads)\n")
    print(f"| model | mIoU @{hi} | mIoU @{lo} | change | ORT ms @{hi} | ORT ms @{lo} | time @{lo} / @{hi} |")
    print("|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for ck in runs:
        miou = {s: eval_segmenter_checkpoint(ck, img_size=s)["miou"] for s in (hi, lo)}
        model, info = load_segmenter_checkpoint(ck)
        fns = {s: _ort_runner(model, torch.randn(1, 3, s, s, generator=g), tmp / f"{ck.parent.name}_{s}.onnx")
               for s in (hi, lo)}
        with torch.inference_mode():
            t = interleaved_timings(fns, seconds=args.seconds)
        print(f"| `{info['recipe'].model}` | {miou[hi]:.3f} | {miou[lo]:.3f} | {miou[lo] - miou[hi]:+.3f} | "
              f"{t[hi]['ms']:.1f} | {t[lo]['ms']:.1f} | {t[lo]['ms'] / t[hi]['ms']:.2f} |", flush=True)


def ceiling(args, tmp: Path) -> None:
    import torch.nn.functional as F

    from mobilenets.data import SceneSegmentation
    from mobilenets.tasks.segmentation.training import segmentation_metrics

    data = SceneSegmentation("val", size=args.size or 320)
    strides = (4, 8, 16, 32)
    metrics = {s: segmentation_metrics(data.num_classes) for s in strides}
    for i in range(len(data)):
        mask = data[i][1].unsqueeze(0)                              # (1, H, W), class ids (255 ignored)
        valid = mask != data.ignore_index
        onehot = F.one_hot(mask * valid, data.num_classes).permute(0, 3, 1, 2).float() * valid.unsqueeze(1)
        for s in strides:
            ideal = F.avg_pool2d(onehot, s, ceil_mode=True)         # class fractions per stride-s cell
            up = F.interpolate(ideal, size=mask.shape[-2:], mode="bilinear", align_corners=False)
            metrics[s].update(up.argmax(1), mask)
    h, w = data.size
    print(f"\n## the ceiling of a perfect stride-s prediction (val digit-scenes, {len(data)} images, {h}x{w})\n")
    print("| output stride | mIoU | pixel acc |")
    print("|---|---|---|")
    for s in strides:
        v = metrics[s].compute()
        print(f"| {s} | {float(v['miou']):.3f} | {float(v['pixel_acc']):.4f} |", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("reference", "resolution", "ceiling", "both"), default="reference")
    p.add_argument("--size", type=int, default=None,
                   help="reference part: the image size (520); ceiling part: the scene size (320)")
    p.add_argument("--sizes", type=int, nargs=2, default=(520, 320), metavar=("HIGH", "LOW"),
                   help="resolution part: the two evaluation sizes")
    p.add_argument("--runs", default="runs/seg-520", help="resolution part: train_segmentation.py's --out")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=4.0, help="timed seconds per path (about)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        if args.part in ("reference", "both"):
            reference(args, Path(d))
        if args.part in ("resolution", "both"):
            resolution(args, Path(d))
        if args.part == "ceiling":
            ceiling(args, Path(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
