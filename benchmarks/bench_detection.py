"""Detector latency: ours vs torchvision on the same weights and images, and our ONNX Runtime
export; then SSDLite on one backbone per family (params, MACs, eager and ORT latency).

    python benchmarks/bench_detection.py                      # both parts, batch 1, 320x320, 2 threads
    python benchmarks/bench_detection.py --part reference     # ours vs torchvision only
    python benchmarks/bench_detection.py --part families --backbones mobilenetv4_conv_small mobileformer_151m

Part "reference": torchvision's ``ssdlite320_mobilenet_v3_large`` and
``fasterrcnn_mobilenet_v3_large_320_fpn`` (random weights, BatchNorm statistics calibrated on the
benchmark image so the network is well conditioned), their state dict loaded into ours; the
detections are checked to be the same first. Timed interleaved on one image (torchvision's
eager, ours eager, ours fused eager, ours in ONNX Runtime with NMS in the graph); reported as
medians and ratios to torchvision eager. Goals (issue 13): ours eager / torchvision <= 1.0, ORT
at least 2x faster than torchvision eager.

Part "families": SSDLite320 on each backbone: params, MACs at 320, eager fused and ORT latency.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import torch

import mobilenets
from mobilenets.deploy.timing import interleaved_timings
from mobilenets.layers.bn_stats import calibrate_bn_stats
from mobilenets.tasks.detection.cost import detector_macs
from mobilenets.tasks.detection.export import export_detector_onnx, fuse_detector, match_detections

REFERENCE = {"ssdlite320_mobilenetv3_large_100": "ssdlite320_mobilenet_v3_large",
             "fasterrcnn_mobilenetv3_large_100_320_fpn": "fasterrcnn_mobilenet_v3_large_320_fpn"}
FAMILIES = ["mobilenetv1_100", "mobilenetv2_100", "mobilenetv3_large_100", "mobilenetv3_small_100",
            "mobilenetv4_conv_small", "mobilenetv4_conv_medium", "mobilenetv4_hybrid_medium",
            "mobileformer_151m", "mobileformer_294m"]


@torch.no_grad()
def trained_like(model: torch.nn.Module, num_classes: int, seed: int = 0) -> torch.nn.Module:
    """Give the classifier biases a trained detector's prior (background likely, each object
    class unlikely, a few classes less so), so post-processing handles a realistic number of
    candidates: with random weights every one of the ~3000 x 91 anchor-class scores clears the
    0.001 threshold and NMS dominates the time."""
    g = torch.Generator().manual_seed(seed)
    prior = torch.full((num_classes,), -6.0)
    prior[0] = 6.0
    prior[1 + torch.randperm(num_classes - 1, generator=g)[:3]] = -2.5
    if hasattr(model, "roi_heads"):
        model.roi_heads.box_predictor.cls_score.bias.copy_(prior)
    else:
        for block in model.head.classification_head.module_list:
            conv = block[-1]
            conv.bias.copy_(prior.repeat(conv.out_channels // num_classes))
    return model


def _ort_runner(model, image, tmp: Path, name: str):
    import onnxruntime as ort
    # the export is verified on the image (1e-2 px here: random-weight boxes span the whole image and
    # the 28-layer V1 reaches 1.4e-3 px of fp32 noise; tests/test_detection_train.py holds 1e-3 px)
    path = export_detector_onnx(model, tmp / f"{name}.onnx", tuple(image.shape[1:]), images=[image], box_tol=1e-2)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {"image": image.numpy()}
    return lambda: sess.run(None, feed)


def _same(a, b) -> float:
    return match_detections(a, b)[0] if len(a["boxes"]) else 0.0


def reference(args, tmp: Path) -> None:
    import torchvision.models.detection as tvd
    print(f"## ours vs torchvision (batch 1, {args.size}x{args.size}, {torch.get_num_threads()} threads)\n")
    print("| model | torchvision eager ms | ours eager ms (ratio) | ours fused ms (ratio) | ours ORT ms (ratio) "
          "| torchvision / ORT |")
    print("|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, args.size, args.size, generator=g)
    for ours_name, tv_name in REFERENCE.items():
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tv = getattr(tvd, tv_name)(weights=None, weights_backbone=None, num_classes=91).eval()
        calibrate_bn_stats(tv, [image], g)
        trained_like(tv, 91)
        ours = mobilenets.create_model(ours_name, pretrained=tv.state_dict()).eval()
        fused = fuse_detector(ours)
        with torch.inference_mode():
            d = max(_same(tv([image])[0], ours([image])[0]), _same(tv([image])[0], fused([image])[0]))
        assert d <= 1e-2, f"{ours_name}: detections differ from torchvision's by {d} px"
        fns = {"tv": lambda: tv([image]), "ours": lambda: ours([image]), "fused": lambda: fused([image]),
               "ort": _ort_runner(ours, image, tmp, ours_name)}
        with torch.inference_mode():
            t = interleaved_timings(fns, seconds=args.seconds)
        base = t["tv"]["ms"]
        print(f"| `{ours_name}` | {base:.1f} | {t['ours']['ms']:.1f} ({t['ours']['ms'] / base:.2f}) | "
              f"{t['fused']['ms']:.1f} ({t['fused']['ms'] / base:.2f}) | {t['ort']['ms']:.1f} "
              f"({t['ort']['ms'] / base:.2f}) | {base / t['ort']['ms']:.2f}x |", flush=True)


def families(args, tmp: Path) -> None:
    print(f"\n## SSDLite320 per backbone (batch 1, 320x320, {torch.get_num_threads()} threads)\n")
    print("| detector | params (M) | MACs (M) | eager fused ms | ORT ms |")
    print("|---|---|---|---|---|")
    image = torch.rand(3, 320, 320, generator=torch.Generator().manual_seed(0))
    for b in args.backbones:
        name = f"ssdlite320_{b}"
        torch.manual_seed(0)
        m = mobilenets.create_model(name).eval()
        calibrate_bn_stats(m, [image])
        trained_like(m, 91)
        fused = fuse_detector(m)
        fns = {"fused": lambda: fused([image]), "ort": _ort_runner(m, image, tmp, name)}
        with torch.inference_mode():
            t = interleaved_timings(fns, seconds=args.seconds)
        print(f"| `{name}` | {mobilenets.count_params(m) / 1e6:.3f} | {detector_macs(m) / 1e6:.0f} | "
              f"{t['fused']['ms']:.1f} | {t['ort']['ms']:.1f} |", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("reference", "families", "both"), default="both")
    p.add_argument("--backbones", nargs="*", default=FAMILIES)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=4.0, help="timed seconds per path (about)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        if args.part in ("reference", "both"):
            reference(args, Path(d))
        if args.part in ("families", "both"):
            families(args, Path(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
