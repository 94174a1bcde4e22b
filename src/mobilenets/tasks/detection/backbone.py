"""Where each detector reads our backbones (cut points), in the units / taps of
:mod:`mobilenets.tasks.backbone` (shared with segmentation, re-exported here).

Cut points (README "Detection"):

* SSDLite: the expansion output of the block that downsamples to stride 32 (torchvision's "C4
  expansion": the 1x1 expansion runs at stride 16, before that block's strided depthwise) when
  that block expands before its stride (V2/V3 inverted residuals, V4 UIBs with a middle
  depthwise); otherwise (V1, fused or start-depthwise V4 blocks, Mobile-Former) the stride-16
  map that enters that block. Then the backbone's last map (stride 32).
* Faster R-CNN FPN: the last two units (the block that reaches stride 32, and the last block),
  as torchvision for MobileNetV3.
* RetinaNet FPN: the last map at strides 8, 16 and 32 (the ResNet convention, C3-C5).
"""

from __future__ import annotations

from typing import Sequence

import torch.nn as nn

from ...models.base import Backbone
from ..backbone import Taps, _stride, freeze_layers, frozen_batchnorm, units  # noqa: F401

__all__ = ["Taps", "fpn_taps", "freeze_layers", "frozen_batchnorm", "ssdlite_taps", "stride_taps", "units"]


def ssdlite_taps(backbone: Backbone) -> list[tuple[str, int]]:
    """SSDLite's two backbone maps (module docstring): the C4 expansion (or the stride-16 map)
    and the last map."""
    idx = units(backbone)
    if len(idx) < 3:
        raise ValueError("SSDLite needs a backbone that downsamples to stride 32")
    down = idx[-2]  # the block (1-based) that reaches stride 32
    blk = backbone.blocks()[down - 1][1]
    c4 = ("pre_stride", down) if _expands(blk) else ("out", down - 1)
    return [c4, ("out", idx[-1])]


def _expands(blk: nn.Module) -> bool:
    f = getattr(blk, "expands_before_stride", None)
    return bool(f and f())


def fpn_taps(backbone: Backbone) -> list[tuple[str, int]]:
    """Faster R-CNN's FPN inputs: the last two units (torchvision's MobileNetV3 choice)."""
    idx = units(backbone)
    return [("out", idx[-2]), ("out", idx[-1])]


def stride_taps(backbone: Backbone, reductions: Sequence[int] = (8, 16, 32)) -> list[tuple[str, int]]:
    """The last map at each reduction (RetinaNet's C3-C5), from the stem and blocks' strides.

    Raises:
        ValueError: the backbone has no map at one of the reductions (e.g. a dilated backbone),
            naming the fix.
    """
    red, last_at = 2, {2: 0}
    for i, (_, blk) in enumerate(backbone.blocks(), start=1):
        red *= _stride(blk)
        last_at[red] = i
    missing = [r for r in reductions if r not in last_at]
    if missing:
        raise ValueError(f"this backbone has no feature map at stride(s) {missing} (it reaches "
                         f"{sorted(last_at)}); build it with output_stride=32 (no dilation)")
    return [("out", last_at[r]) for r in reductions]
