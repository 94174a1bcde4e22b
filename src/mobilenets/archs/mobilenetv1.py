"""MobileNetV1 (Howard et al. 2017, https://arxiv.org/abs/1704.04861), Table 1.

3x3 s2 conv 32 -> 13 depthwise-separable blocks -> pool -> FC. The width multiplier alpha
scales every layer (``width_mult``); the resolution multiplier rho is simply the input size
(any size >= 32 works). ReLU6 as in the TF-slim / timm checkpoints.

``V1_HEAD`` is timm's ``mobilenetv1_100h``: a 1x1 conv + BN + ReLU6 to 1024 (never below it)
before the pool, as timm's EfficientNet ``conv_head``.
"""

from __future__ import annotations

from .spec import HeadSpec, NetSpec, parse_stages

V1 = NetSpec(
    family="mobilenetv1",
    stages=parse_stages([
        ["dsa_r1_k3_s1_c64"],    # Table 1: conv dw/s1, conv 1x1 -> 64
        ["dsa_r2_k3_s2_c128"],   # dw/s2 -> 128, dw/s1 -> 128
        ["dsa_r2_k3_s2_c256"],   # dw/s2 -> 256, dw/s1 -> 256
        ["dsa_r6_k3_s2_c512"],   # dw/s2 -> 512, 5x (dw/s1 -> 512)
        ["dsa_r2_k3_s2_c1024"],  # dw/s2 -> 1024, dw/s1 -> 1024
    ]),
    stem=32,
    act="relu6",
    head=HeadSpec(hidden=0),
    drop_rate=0.0,
    paper="https://arxiv.org/abs/1704.04861",
)

V1_HEAD = V1.replace(stages=V1.stages + parse_stages([["cn_r1_k1_s1_c1024_wmax"]]), last_stage_is_head=True)


#: Registered variants: (name, width_mult, same architecture elsewhere[, spec]).
VARIANTS = [
    ("mobilenetv1_100", 1.0, {"timm": "mobilenetv1_100"}),
    ("mobilenetv1_075", 0.75, {}),
    ("mobilenetv1_050", 0.5, {}),
    ("mobilenetv1_025", 0.25, {}),
    ("mobilenetv1_125", 1.25, {"timm": "mobilenetv1_125"}),
    ("mobilenetv1_100h", 1.0, {"timm": "mobilenetv1_100h"}, V1_HEAD),
]
