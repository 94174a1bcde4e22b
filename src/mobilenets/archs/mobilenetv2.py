"""MobileNetV2 (Sandler et al. 2018, https://arxiv.org/abs/1801.04381), Table 2.

Inverted residuals with linear bottlenecks and ReLU6. Rows are (t, c, n, s) of Table 2.
The last 1x1 conv to 1280 scales only when the width is above 1 (paper section 5.1).

timm's ``mobilenetv2_110d`` / ``_120d`` (``timm/models/efficientnet.py``) scale width and depth
together (EfficientNet-style, :func:`v2_spec` ``depth_mult``) with the stem, the last conv and
the depth of the first and last block stages fixed (timm's ``fix_stem_head``).
"""

from __future__ import annotations

import math

from .spec import HeadSpec, NetSpec, parse_stages

_BLOCKS = [
    ["ds_r1_k3_s1_c16"],         # t=1, c=16,  n=1, s=1 (no expansion: dw + linear pw)
    ["ir_r2_k3_s2_e6_c24"],      # t=6, c=24,  n=2, s=2
    ["ir_r3_k3_s2_e6_c32"],      # t=6, c=32,  n=3, s=2
    ["ir_r4_k3_s2_e6_c64"],      # t=6, c=64,  n=4, s=2
    ["ir_r3_k3_s1_e6_c96"],      # t=6, c=96,  n=3, s=1
    ["ir_r3_k3_s2_e6_c160"],     # t=6, c=160, n=3, s=2
    ["ir_r1_k3_s1_e6_c320"],     # t=6, c=320, n=1, s=1
]


def v2_spec(depth_mult: float = 1.0, fix_stem_head: bool = False) -> NetSpec:
    """MobileNetV2, optionally depth-scaled; ``fix_stem_head``: the stem (32) and the last
    conv (1280) never scale with the width, nor the first and last block stages with depth."""
    fixed = (0, len(_BLOCKS) - 1) if fix_stem_head else ()
    head_row = "cn_r1_k1_s1_c1280_wfix" if fix_stem_head else "cn_r1_k1_s1_c1280_wmax"  # conv2d 1x1 -> 1280
    return NetSpec(
        family="mobilenetv2",
        stages=parse_stages(_BLOCKS, depth_mult, fixed) + parse_stages([[head_row]]),
        stem=32,
        fix_stem_below=math.inf if fix_stem_head else 0.0,
        act="relu6",
        head=HeadSpec(hidden=0),
        drop_rate=0.2,
        paper="https://arxiv.org/abs/1801.04381",
        # The 1280 conv is the head's (timm's conv_head): the stride-32 feature level is the
        # 320-channel last block, as in timm's feature_info.
        last_stage_is_head=True,
    )


V2 = v2_spec()

#: Registered variants: (name, width_mult, same architecture elsewhere[, v2_spec options]).
VARIANTS = [
    ("mobilenetv2_035", 0.35, {"timm": "mobilenetv2_035"}),
    ("mobilenetv2_050", 0.5, {"timm": "mobilenetv2_050"}),
    ("mobilenetv2_075", 0.75, {"timm": "mobilenetv2_075"}),
    ("mobilenetv2_100", 1.0, {"timm": "mobilenetv2_100", "torchvision": "mobilenet_v2"}),
    ("mobilenetv2_140", 1.4, {"timm": "mobilenetv2_140"}),
    ("mobilenetv2_110d", 1.1, {"timm": "mobilenetv2_110d"}, {"depth_mult": 1.2, "fix_stem_head": True}),
    ("mobilenetv2_120d", 1.2, {"timm": "mobilenetv2_120d"}, {"depth_mult": 1.4, "fix_stem_head": True}),
]
