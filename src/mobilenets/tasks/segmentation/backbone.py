"""Where the segmentation heads read our backbones (README "Segmentation"), in the units / taps
of :mod:`mobilenets.tasks.backbone`.

As torchvision does for MobileNetV3 (``_lraspp_mobilenetv3``, ``_deeplabv3_mobilenetv3``), on a
backbone built with ``output_stride=16`` (the later strides become dilations):

* the low level / aux map (LR-ASPP's ``"low"``, DeepLabV3's and FCN's ``"aux"``): the output of
  the block that downsamples to stride 8 (torchvision's ``stage_indices[-4]``, its "C2"; on
  MobileNetV3-Large ``features.4``, 40 channels);
* the high level / out map (``"high"``, ``"out"``): the backbone's last block (stride 16; on
  MobileNetV3-Large ``features.16``, the 960-channel conv).

The same rule holds for every family: for V1, V2, V4 and Mobile-Former it is the block whose
stride first reaches 8 and the last block of the (dilated) backbone. No family-specific branches.
"""

from __future__ import annotations

from ...models.base import Backbone
from ..backbone import _stride

LOW_STRIDE = 8


def reductions(backbone: Backbone) -> dict[int, int]:
    """``{reduction: the first layer reaching it}`` (0 = the stem, i = block i-1), from the
    stem's and the blocks' strides (after dilation)."""
    red, first_at = 2, {2: 0}
    for i, (_, blk) in enumerate(backbone.blocks(), start=1):
        red *= _stride(blk)
        first_at.setdefault(red, i)
    return first_at


def segmentation_taps(backbone: Backbone) -> list[tuple[str, int]]:
    """``[low, high]``: the block that downsamples to stride 8 and the last block (module notes).

    Raises:
        ValueError: the backbone has no stride-8 map, naming the strides it has.
    """
    first_at = reductions(backbone)
    if LOW_STRIDE not in first_at:
        raise ValueError(f"the segmentation heads read a stride-{LOW_STRIDE} map, but this backbone has feature "
                         f"maps at strides {sorted(first_at)} only (its blocks: {len(backbone.blocks())})")
    return [("out", first_at[LOW_STRIDE]), ("out", len(backbone.blocks()))]


def output_stride_of(backbone: Backbone) -> int:
    """The stride of the backbone's last map."""
    return max(reductions(backbone))
