"""MobileNetV2 (Sandler et al. 2018, https://arxiv.org/abs/1801.04381), Table 2.

Inverted residuals with linear bottlenecks and ReLU6. Rows are (t, c, n, s) of Table 2.
The last 1x1 conv to 1280 scales only when the width is above 1 (paper section 5.1).
"""

from __future__ import annotations

from .spec import HeadSpec, NetSpec, parse_stages

V2 = NetSpec(
    family="mobilenetv2",
    stages=parse_stages([
        ["ds_r1_k3_s1_c16"],         # t=1, c=16,  n=1, s=1 (no expansion: dw + linear pw)
        ["ir_r2_k3_s2_e6_c24"],      # t=6, c=24,  n=2, s=2
        ["ir_r3_k3_s2_e6_c32"],      # t=6, c=32,  n=3, s=2
        ["ir_r4_k3_s2_e6_c64"],      # t=6, c=64,  n=4, s=2
        ["ir_r3_k3_s1_e6_c96"],      # t=6, c=96,  n=3, s=1
        ["ir_r3_k3_s2_e6_c160"],     # t=6, c=160, n=3, s=2
        ["ir_r1_k3_s1_e6_c320"],     # t=6, c=320, n=1, s=1
        ["cn_r1_k1_s1_c1280_wmax"],  # conv2d 1x1 -> 1280
    ]),
    stem=32,
    act="relu6",
    head=HeadSpec(hidden=0),
    drop_rate=0.2,
    paper="https://arxiv.org/abs/1801.04381",
    # The 1280 conv is the head's (timm's conv_head): the stride-32 feature level is the
    # 320-channel last block, as in timm's feature_info.
    last_stage_is_head=True,
)

#: Registered variants: (name, width_mult, same architecture elsewhere).
VARIANTS = [
    ("mobilenetv2_035", 0.35, {"timm": "mobilenetv2_035"}),
    ("mobilenetv2_050", 0.5, {"timm": "mobilenetv2_050"}),
    ("mobilenetv2_075", 0.75, {"timm": "mobilenetv2_075"}),
    ("mobilenetv2_100", 1.0, {"timm": "mobilenetv2_100", "torchvision": "mobilenet_v2"}),
    ("mobilenetv2_140", 1.4, {"timm": "mobilenetv2_140"}),
]
