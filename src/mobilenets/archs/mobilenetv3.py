"""MobileNetV3 (Howard et al. 2019, https://arxiv.org/abs/1905.02244), Tables 1 and 2.

Rows follow the paper tables: ``e`` is exp size / input channels, ``se0.25`` marks SE,
``nre`` marks ReLU rows (the rest use h-swish). The last 1x1 conv is 6x the last block width;
the head is pool -> Linear(1280 or 1024, bias) + h-swish -> dropout -> Linear (section 5.1).

Options (torchvision's names): ``reduced_tail`` halves the channels of the last stage, the
last conv and the head (section 6.4, for detection/segmentation backbones); ``dilated`` turns
the last stage's stride into dilation 2 (output stride 16).
BatchNorm eps 1e-3 / momentum 0.01 as the paper's TF training and torchvision.
"""

from __future__ import annotations

from .spec import HeadSpec, NetSpec, parse_stages

_LARGE = [
    ["ds_r1_k3_s1_e1_c16_nre"],                                         # 112^2: bneck 3x3, 16
    ["ir_r1_k3_s2_e4_c24_nre", "ir_r1_k3_s1_e3_c24_nre"],               # 64 -> 24, 72 -> 24
    ["ir_r3_k5_s2_e3_c40_se0.25_nre"],                                  # 72, 120, 120 -> 40, SE
    ["ir_r1_k3_s2_e6_c80", "ir_r1_k3_s1_e2.5_c80", "ir_r2_k3_s1_e2.3_c80"],  # 240, 200, 184, 184
    ["ir_r2_k3_s1_e6_c112_se0.25"],                                     # 480, 672 -> 112, SE
    ["ir_r3_k5_s2_e6_c160_se0.25"],                                     # 672, 960, 960 -> 160, SE
    ["cn_r1_k1_s1_c960"],                                               # conv2d 1x1 -> 960
]
_SMALL = [
    ["ds_r1_k3_s2_e1_c16_se0.25_nre"],                                  # 3x3, 16, SE, s2
    ["ir_r1_k3_s2_e4.5_c24_nre", "ir_r1_k3_s1_e3.67_c24_nre"],          # 72 -> 24, 88 -> 24
    ["ir_r1_k5_s2_e4_c40_se0.25", "ir_r2_k5_s1_e6_c40_se0.25"],         # 96, 240, 240 -> 40
    ["ir_r2_k5_s1_e3_c48_se0.25"],                                      # 120, 144 -> 48
    ["ir_r3_k5_s2_e6_c96_se0.25"],                                      # 288, 576, 576 -> 96
    ["cn_r1_k1_s1_c576"],                                               # conv2d 1x1 -> 576
]


def v3_spec(large: bool = True, reduced_tail: bool = False) -> NetSpec:
    """The MobileNetV3-Large or -Small spec, optionally with the reduced tail."""
    rows = _LARGE if large else _SMALL
    stages = parse_stages(rows)
    hidden = 1280 if large else 1024
    if reduced_tail:
        from dataclasses import replace
        # halve the last block stage and the last conv (torchvision `reduced_tail`)
        stages = stages[:-2] + tuple(tuple(replace(b, out=b.out // 2) for b in st) for st in stages[-2:])
        hidden //= 2
    return NetSpec(
        family="mobilenetv3", stages=stages, stem=16, act="hard_swish", fix_stem_below=0.75,
        head=HeadSpec(hidden=hidden, norm=False, act="hard_swish"),
        norm_eps=1e-3, norm_momentum=0.01, drop_rate=0.2,
        paper="https://arxiv.org/abs/1905.02244")


#: Registered variants: (name, large, width_mult, same architecture elsewhere).
VARIANTS = [
    ("mobilenetv3_large_075", True, 0.75, {"timm": "mobilenetv3_large_075"}),
    ("mobilenetv3_large_100", True, 1.0,
     {"timm": "mobilenetv3_large_100", "torchvision": "mobilenet_v3_large"}),
    ("mobilenetv3_small_050", False, 0.5, {"timm": "mobilenetv3_small_050"}),
    ("mobilenetv3_small_075", False, 0.75, {"timm": "mobilenetv3_small_075"}),
    ("mobilenetv3_small_100", False, 1.0,
     {"timm": "mobilenetv3_small_100", "torchvision": "mobilenet_v3_small"}),
]
