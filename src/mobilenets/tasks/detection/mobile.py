"""SSD / SSDLite on the mobile runtimes (ExecuTorch, LiteRT), fp32 or INT8.

The mobile runtimes take no NMS, so the file holds the network only, as SSD models ship on phones:
:class:`SSDNetwork` takes the detector's input (one normalized ``(1, 3, 320, 320)`` image, the output
of torchvision's own ``GeneralizedRCNNTransform``) and returns the head's raw outputs,
``bbox_regression`` ``(1, anchors, 4)`` and ``cls_logits`` ``(1, anchors, classes)``. Everything
around it stays torchvision's, run on the host by :class:`MobileDetector`: the resize and
normalization, the default boxes, the box decoding, the score threshold and NMS, and the mapping
back to the image's size. So a :class:`MobileDetector` is a drop-in detector (a list of images in,
torchvision's detection dicts out) whose network runs in the file, and is evaluated with the same
COCO mAP as the eager model.

INT8 (:func:`export_ssd_mobile` with ``calib``): PT2E static quantization with the runtime's own
quantizer, calibrated on images passed through the detector's transform; the file is verified
against the PT2E reference by :func:`~mobilenets.deploy.export_mobile`, and what it costs in
detections is measured by evaluating the :class:`MobileDetector` (mAP INT8 vs fp32).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from ...deploy.mobile import MobileExport, export_mobile, outputs
from ...deploy.runtimes import FORMAT_LABELS, file_runner, runtime_for
from ...models.info import model_info, set_model_info
from .export import unfreeze_batchnorm

#: the formats an SSD network goes to (``mobilenets export --format``'s spelling)
SSD_MOBILE_FORMATS = ("executorch", "tflite")


def _check_ssd(model: nn.Module) -> None:
    from torchvision.models.detection.ssd import SSD

    if not isinstance(model, SSD):
        raise ValueError(f"mobile detector files are for SSD / SSDLite (ssdlite320_*); got {type(model).__name__}: "
                         "Faster R-CNN and RetinaNet export to ONNX with their post-processing in the graph "
                         "(mobilenets export --format onnx)")


class SSDNetwork(nn.Module):
    """An SSD's network without its pre- and post-processing: a normalized batch at the detector's
    fixed size -> ``(bbox_regression (N, A, 4), cls_logits (N, A, classes))``, the tensors
    torchvision's ``SSD.postprocess_detections`` decodes."""

    def __init__(self, ssd: nn.Module):
        super().__init__()
        _check_ssd(ssd)
        self.backbone, self.head = ssd.backbone, ssd.head
        info = model_info(ssd)
        set_model_info(self, info.replace(task="classification", input_size=(3, *ssd.transform.fixed_size)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone(x)
        feats = [feats] if isinstance(feats, torch.Tensor) else list(feats.values())
        out = self.head(feats)
        return out["bbox_regression"], out["cls_logits"]


def detector_inputs(model: nn.Module, images: Sequence[torch.Tensor]) -> torch.Tensor:
    """``images`` (each ``(3, H, W)`` in [0, 1], any size) as the network takes them: resized to the
    detector's fixed size and normalized by its own transform, ``(N, 3, 320, 320)``."""
    _check_ssd(model)
    with torch.no_grad():
        return model.transform.eval()(list(images))[0].tensors


#: ``--calib`` sources for a detector besides an image folder
DETECTION_CALIB_SOURCES = ("digit-scenes", "fake")


def detection_calibration(source: Union[str, os.PathLike], model: nn.Module, count: int = 128, seed: int = 0):
    """INT8 calibration for an SSD's network file (:class:`~mobilenets.deploy.calibration.CalibrationSet`):
    ``count`` images from ``source`` (``"digit-scenes"``: the built-in scenes' training split;
    ``"fake"``: random images; or an image folder, its ``train/`` when it has one), each as read
    (any size), through the detector's own transform (``(N, 3, 320, 320)``, normalized)."""
    from ...data import DigitScenes
    from ...deploy.calibration import CalibrationSet, _folder_images

    _check_ssd(model)
    if int(count) < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    g = torch.Generator().manual_seed(seed)
    key, skipped = os.fspath(source), []
    if key == "digit-scenes":
        scenes = DigitScenes("train", tuple(model.transform.fixed_size))
        pick = torch.randperm(len(scenes), generator=g)[:count].tolist()
        images, available = [scenes.generate(i)[0] for i in pick], len(scenes)
    elif key == "fake":
        images, available = [torch.rand(3, *model.transform.fixed_size, generator=g) for _ in range(int(count))], None
    elif os.path.isdir(key):
        raw, available, skipped = _folder_images(Path(key), int(count), g, common=None)
        images = [im.float() / 255 for im in raw]
    else:
        raise ValueError(f"detector calibration data must be one of {', '.join(DETECTION_CALIB_SOURCES)} or an "
                         f"image folder; got {key!r}")
    return CalibrationSet(detector_inputs(model, images), key, int(count), available, skipped)


def export_ssd_mobile(model: nn.Module, path: Union[str, os.PathLike], fmt: str = "executorch",
                      calib: Optional[Sequence[torch.Tensor]] = None, *, calib_count: int = 128,
                      allow_fallback: bool = False, verify: bool = True) -> MobileExport:
    """Write an SSD's network (:class:`SSDNetwork`, BatchNorm folded) as an ExecuTorch ``.pte`` or a
    LiteRT ``.tflite`` file at the detector's fixed size, batch 1, verified by running the file.

    Args:
        model: an SSD / SSDLite detector (``ssdlite320_*``; a detection checkpoint's model).
        path: the file (``.pte`` for ``fmt="executorch"``, ``.tflite`` for ``"tflite"``).
        calib: images (each ``(3, H, W)`` in [0, 1], as the detector takes them) for INT8 static
            quantization (the first ``calib_count``); None: fp32.
        allow_fallback: accept ops outside the accelerated backend.

    Run it with :class:`MobileDetector` (the host side: transform, default boxes, decoding, NMS).
    """
    images = None
    if calib is not None:
        calib = list(calib)[:calib_count]
        if not calib:
            raise ValueError("calib: give at least one image for INT8 (or None for fp32)")
        images = detector_inputs(model, calib)
    return export_ssd_network(model, path, fmt, images, allow_fallback=allow_fallback, verify=verify)


def export_ssd_network(model: nn.Module, path: Union[str, os.PathLike], fmt: str, images: Optional[torch.Tensor],
                       *, input_size: Optional[Sequence[int]] = None, allow_fallback: bool = False,
                       verify: bool = True, calib_method: Optional[str] = None) -> MobileExport:
    """:func:`export_ssd_mobile` with calibration ``images`` already through the detector's transform
    (:func:`detector_inputs`, :func:`detection_calibration`; None: fp32). ``input_size``, when
    given, must be the detector's fixed size."""
    _check_ssd(model)
    if fmt not in SSD_MOBILE_FORMATS:
        raise ValueError(f"fmt: expected one of {', '.join(SSD_MOBILE_FORMATS)}, got {fmt!r}")
    size = tuple(model.transform.fixed_size)
    if input_size is not None and tuple(input_size) != size:
        raise ValueError(f"this SSD takes {size[0]}x{size[1]} images (its transform resizes every image to it); "
                         f"got input size {'x'.join(str(s) for s in input_size)}: drop --input-size")
    net = SSDNetwork(unfreeze_batchnorm(_eval_copy(model)))
    return export_mobile(runtime_for(fmt), net, path, size, images, calib_count=len(images) if images is not None
                         else 1, allow_fallback=allow_fallback, verify=verify, calib_method=calib_method)


def _eval_copy(model: nn.Module) -> nn.Module:
    import copy

    _check_ssd(model)
    return copy.deepcopy(model).eval()


class MobileDetector(nn.Module):
    """A detector whose network runs from a mobile file (:func:`export_ssd_mobile`): called like the
    eager SSD in eval mode (a list of ``(3, H, W)`` images in [0, 1] -> one dict of ``boxes``,
    ``labels``, ``scores`` per image), torchvision's transform, default boxes, decoding and NMS on
    the host around the file's raw outputs.

    Args:
        model: the SSD the file was exported from (its transform, anchors and post-processing
            settings: ``score_thresh``, ``nms_thresh``, ``detections_per_img``, ``topk_candidates``).
        path: the ``.pte`` or ``.tflite`` file.
        threads: runtime threads (0: the runtime's default).
    """

    def __init__(self, model: nn.Module, path: Union[str, os.PathLike], threads: int = 0):
        super().__init__()
        self.ssd = _eval_copy(model)
        name = os.fspath(path)
        if not name.lower().endswith((".pte", ".tflite")):
            onnx = ": an ONNX detector file has decode + NMS in its graph; run it with ONNX Runtime"
            raise ValueError(f"expected a .pte or .tflite file (an SSD's network, export_ssd_mobile), got {name!r}"
                             + (onnx if name.lower().endswith(".onnx") else ""))
        fmt, self.runner = file_runner(name, threads)
        self.path, self.runtime = name, FORMAT_LABELS[fmt]
        self._maps: Optional[list] = None
        self.eval()

    def _feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps' shapes (all the default-box generator reads), from one eager pass."""
        if self._maps is None:
            with torch.no_grad():
                feats = self.ssd.backbone(x[:1])
            feats = [feats] if isinstance(feats, torch.Tensor) else list(feats.values())
            self._maps = [torch.empty(0, 0, *f.shape[-2:]) for f in feats]
        return self._maps

    @torch.no_grad()
    def forward(self, images: Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        from torchvision.models.detection.image_list import ImageList

        if self.training:
            raise RuntimeError("a MobileDetector only runs inference (its network is a file)")
        sizes = [tuple(im.shape[-2:]) for im in images]
        batch, _ = self.ssd.transform(list(images))
        outs = [outputs(self.runner(batch.tensors[i:i + 1])) for i in range(len(images))]
        if len(outs[0]) != 2:
            raise ValueError(f"{self.path}: expected an SSD network file with 2 outputs (bbox_regression, "
                             f"cls_logits), got {len(outs[0])}")
        head = {"bbox_regression": torch.cat([o[0] for o in outs]), "cls_logits": torch.cat([o[1] for o in outs])}
        maps = self._feature_maps(batch.tensors)
        anchors = self.ssd.anchor_generator(ImageList(batch.tensors, batch.image_sizes), maps)
        dets = self.ssd.postprocess_detections(head, anchors, batch.image_sizes)
        return self.ssd.transform.postprocess(dets, batch.image_sizes, sizes)


__all__ = ["DETECTION_CALIB_SOURCES", "MobileDetector", "SSDNetwork", "SSD_MOBILE_FORMATS", "detection_calibration",
           "detector_inputs", "export_ssd_mobile", "export_ssd_network"]
