"""Detectors to ONNX with their post-processing in the graph (box decoding, score threshold, NMS,
a fixed maximum of detections: torchvision's own ops, traced), checked in ONNX Runtime.

The exported graph takes one ``(3, H, W)`` float image in [0, 1] of the exported size (``image``;
resize images to it first: the resize inside torchvision's detectors is traced with that size's
scale factors, so another size would map boxes back wrongly) and returns the model's detection
detections as three outputs, always in this order and with these names (:data:`OUTPUT_NAMES`):
``boxes`` (float32 ``(N, 4)``, xyxy pixels of the input image), ``labels`` (int64 ``(N,)``, the
class index, 0 being the background) and ``scores`` (float32 ``(N,)``), ``N`` at most
``detections_per_img`` (torchvision's own dicts differ in key order between SSD / RetinaNet and
Faster R-CNN; the file does not). BatchNorm is folded first (torchvision's
``FrozenBatchNorm2d`` too), so the file runs the same convolutions as the fused eager model.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from ...deploy.export_swaps import swap_for_export
from ...deploy.fuse import fuse
from ...deploy.onnx_export import check_export_args, write_model_info
from ...models.info import model_info
from ...weights.io import atomic_write


#: the exported file's outputs, in order, for every detector family
OUTPUT_NAMES = ("boxes", "labels", "scores")


class DetectionOutputs(nn.Module):
    """A detector taking one ``(3, H, W)`` image and returning its detections as the tuple
    :data:`OUTPUT_NAMES` (the order the exported graph's outputs have)."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.detector([image])[0]
        return tuple(out[k] for k in OUTPUT_NAMES)


def unfreeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace torchvision's ``FrozenBatchNorm2d`` by an eval-mode ``BatchNorm2d`` computing the
    same function (so :func:`mobilenets.deploy.fuse` folds it), in place."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, FrozenBatchNorm2d):
            bn = nn.BatchNorm2d(child.weight.numel(), eps=child.eps).eval()
            with torch.no_grad():
                for k in ("weight", "bias", "running_mean", "running_var"):
                    getattr(bn, k).copy_(getattr(child, k))
            setattr(module, name, bn)
        else:
            unfreeze_batchnorm(child)
    return module


def fuse_detector(model: nn.Module) -> nn.Module:
    """A fused copy for inference: every BatchNorm (frozen ones included) folded, inference
    no-ops removed, export forms swapped in; eval mode."""
    net = unfreeze_batchnorm(copy.deepcopy(model).eval())
    net = fuse(net, inplace=True)
    swap_for_export(net, inplace=True)
    return net


def export_detector_onnx(model: nn.Module, path: Union[str, Path], input_size: Sequence[int] = (320, 320),
                         opset: int = 17, verify: bool = True, images: Optional[Sequence[torch.Tensor]] = None,
                         box_tol: float = 1e-3) -> Path:
    """Export a detector to ONNX (post-processing included), check it in ONNX Runtime, write
    it atomically.

    Args:
        model: a detector from :func:`mobilenets.create_model` (``ssdlite320_*``,
            ``fasterrcnn_*``, ``retinanet_*``).
        path: the ``.onnx`` file.
        input_size: ``(H, W)`` of the image the graph takes (fixed).
        opset: ONNX opset (11-20; 17 by default).
        verify: run the file in ONNX Runtime on ``images`` (default: two random images, one of
            ``input_size``) and require the eager detections: the same count, each eager detection
            matched by one of the same label with its box within ``box_tol`` pixels and its
            score within 1e-4.

    Raises:
        ValueError: bad arguments. RuntimeError: verification failed (no file is left).
    """
    path = check_export_args(path, input_size, opset, min_opset=11)
    net = fuse_detector(model)
    g = torch.Generator().manual_seed(0)
    example = torch.rand(3, *input_size, generator=g)
    names = list(OUTPUT_NAMES)
    checks = list(images) if images is not None else [torch.rand(3, *input_size, generator=g) for _ in range(2)]
    for im in checks:
        if tuple(im.shape) != (3, *input_size):
            raise ValueError(f"verification images must be (3, {input_size[0]}, {input_size[1]}) (the exported "
                             f"size), got {tuple(im.shape)}")

    def write(tmp: str) -> None:
        with warnings.catch_warnings():  # torchvision's tracer warnings about Python scalars
            warnings.simplefilter("ignore")
            torch.onnx.export(DetectionOutputs(net).eval(), (example,), tmp, input_names=["image"],
                              output_names=names, opset_version=int(opset), do_constant_folding=True, dynamo=False,
                              dynamic_axes={n: {0: "detections"} for n in names})
        write_model_info(tmp, model_info(model).replace(input_size=(3, *input_size)))
        if verify:
            verify_detector_onnx(tmp, net, checks, box_tol)

    return atomic_write(path, write)


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_detections(got: dict, ref: dict, box_tol: float = float("inf"), nms_iou: Optional[float] = None,
                     score_tol: float = 1e-4) -> tuple[float, float]:
    """Largest box (px) and score difference between two sets of detections (dicts of tensors
    or arrays: ``boxes``, ``labels``, ``scores``), each of ``ref``'s detections paired with
    ``got``'s detection of the same label whose box is nearest (near-equal scores may come out in
    another order); ``inf`` when a label has no partner or the counts differ.

    ``nms_iou`` (the model's NMS IoU threshold): a tie NMS may break either way. Two boxes of one
    label that overlap by more than it suppress each other, and when their scores are equal
    within float rounding which one survives depends on the last bit. So a ``ref`` detection with
    no box within ``box_tol`` may pair with a ``got`` detection that has none either, of the same
    label, with its score within ``score_tol`` and IoU above ``nms_iou`` (measured once: eager kept
    one box of such a pair, ONNX Runtime the other, scores 1.6e-7 apart)."""
    import numpy as np

    rb, rl, rs = (np.asarray(ref[k]) for k in ("boxes", "labels", "scores"))
    gb, gl, gs = (np.asarray(got[k]) for k in ("boxes", "labels", "scores"))
    if len(rb) != len(gb):
        return float("inf"), float("inf")
    worst_box = worst_score = 0.0
    unmatched = []
    for b, lab, sc in zip(rb, rl, rs):
        same = np.nonzero(gl == lab)[0]
        if not len(same):
            return float("inf"), float("inf")
        dist = np.abs(gb[same] - b).max(axis=1)
        j = int(dist.argmin())
        if nms_iou is not None and dist[j] > box_tol:
            unmatched.append((b, lab, sc, float(dist[j])))
            continue
        worst_box = max(worst_box, float(dist[j]))
        worst_score = max(worst_score, float(abs(gs[same][j] - sc)))
    if unmatched:
        free = [k for k in range(len(gb)) if np.abs(rb - gb[k]).max(axis=1).min() > box_tol]
        for b, lab, sc, nearest in unmatched:
            k = next((k for k in free if gl[k] == lab and abs(gs[k] - sc) <= score_tol and _iou(b, gb[k]) > nms_iou),
                     None)
            if k is None:   # no tie partner: the nearest box's difference stands
                return nearest, worst_score
            free.remove(k)
            worst_score = max(worst_score, float(abs(gs[k] - sc)))
    return worst_box, worst_score


def nms_iou_threshold(model: nn.Module) -> Optional[float]:
    """The IoU above which ``model``'s NMS suppresses a box (``nms_thresh`` on SSD / RetinaNet, on
    the ROI heads for Faster R-CNN); ``None`` when it has none."""
    for m in (model, getattr(model, "roi_heads", None)):
        if m is not None and getattr(m, "nms_thresh", None) is not None:
            return float(m.nms_thresh)
    return None


def detections_limit(model: nn.Module) -> Optional[int]:
    """The most detections ``model`` returns per image (torchvision's ``detections_per_img``:
    on the model for SSD / RetinaNet, on its ROI heads for Faster R-CNN)."""
    for m in (model, getattr(model, "roi_heads", None)):
        if m is not None and getattr(m, "detections_per_img", None) is not None:
            return int(m.detections_per_img)
    return None


@torch.no_grad()
def verify_detector_onnx(file: Union[str, Path], model: nn.Module, images: Sequence[torch.Tensor],
                         box_tol: float = 1e-3) -> float:
    """Run ``file`` in ONNX Runtime on each image and compare with ``model`` (eval); the largest
    box difference in pixels. ``RuntimeError`` when the count, labels, boxes (``box_tol``) or
    scores (1e-4) differ; :class:`~mobilenets.extras.MissingDependencyError` without onnxruntime."""
    from ...onnxrt import ort_session

    sess = ort_session(file, feature="checking the exported detector with ONNX Runtime")
    names = [o.name for o in sess.get_outputs()]
    limit, nms_iou = detections_limit(model), nms_iou_threshold(model)
    worst = 0.0
    model.eval()
    for i, img in enumerate(images):
        got = dict(zip(names, sess.run(None, {"image": img.numpy()})))
        ref = {k: v.numpy() for k, v in model([img])[0].items()}
        where = f"image {i} ({tuple(img.shape[1:])})"
        if got["boxes"].shape != ref["boxes"].shape:
            raise RuntimeError(f"ONNX Runtime found {got['boxes'].shape[0]} detections on {where}, eager "
                               f"{ref['boxes'].shape[0]}")
        if len(ref["boxes"]) and len(ref["boxes"]) == limit:
            # the list was cut at detections_per_img: detections tied with the last kept score may be
            # any of the tied ones (an untrained head scores everything alike); compare above the tie
            cut = float(ref["scores"].min())
            if abs(float(got["scores"].min()) - cut) > 1e-4:
                raise RuntimeError(f"ONNX Runtime's lowest kept score on {where} is {float(got['scores'].min()):.4f}, "
                                   f"eager {cut:.4f}")
            got, ref = ({k: v[d["scores"] > cut + 1e-4] for k, v in d.items()} for d in (got, ref))
            if len(got["boxes"]) != len(ref["boxes"]):
                raise RuntimeError(f"ONNX Runtime found {len(got['boxes'])} detections above {cut:.4f} on {where}, "
                                   f"eager {len(ref['boxes'])}")
        if len(ref["boxes"]):
            d, s = match_detections(got, ref, box_tol, nms_iou)
            if d > box_tol or s > 1e-4:
                raise RuntimeError(f"ONNX Runtime detections differ from eager on {where}: boxes by {d:.2e} px "
                                   f"(allowed {box_tol:g}), scores by {s:.2e}")
            worst = max(worst, d)
    return worst
