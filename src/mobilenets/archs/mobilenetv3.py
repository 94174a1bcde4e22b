"""MobileNetV3 (Howard et al. 2019, https://arxiv.org/abs/1905.02244), Tables 1 and 2.

Rows follow the paper tables: ``e`` is exp size / input channels, ``se0.25`` marks SE,
``nre`` marks ReLU rows (the rest use h-swish). The last 1x1 conv is 6x the last block width;
the head is pool -> Linear(1280 or 1024, bias) + h-swish -> dropout -> Linear (section 5.1).

Options (torchvision's names): ``reduced_tail`` halves the channels of the last stage, the
last conv and the head (section 6.4, for detection/segmentation backbones); ``dilated`` turns
the last stage's stride into dilation 2 (output stride 16).
BatchNorm eps 1e-3 / momentum 0.01 as the paper's TF training and torchvision.

Variants of timm (``timm/models/mobilenetv3.py``):

* ``minimal``: the "MobileNetV3-Minimalistic" models of the paper's TF release (TF-slim
  ``mobilenet_v3.py``): ReLU everywhere, no SE, 3x3 depthwise kernels only.
* ``tf_port``: the TF-ported checkpoints (``tf_mobilenetv3_*``): TensorFlow "SAME" padding
  (``pad_type="same"``) and the BatchNorm eps 1e-3 they were trained with (timm keeps
  PyTorch's momentum 0.1 for them).
* ``depth_mult``: block counts scaled per stage as EfficientNet (``mobilenetv3_large_150d``:
  width 1.5, depth 1.2, the last 1x1 conv stage included).
* :func:`v3_rw_spec`: timm's own early ``mobilenetv3_rw`` (see there).
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

# Minimalistic (TF-slim mobilenet_v3.py V3_*_MINIMALISTIC): the same rows with ReLU, no SE, 3x3.
_LARGE_MINIMAL = [
    ["ds_r1_k3_s1_e1_c16"],
    ["ir_r1_k3_s2_e4_c24", "ir_r1_k3_s1_e3_c24"],
    ["ir_r3_k3_s2_e3_c40"],
    ["ir_r1_k3_s2_e6_c80", "ir_r1_k3_s1_e2.5_c80", "ir_r2_k3_s1_e2.3_c80"],
    ["ir_r2_k3_s1_e6_c112"],
    ["ir_r3_k3_s2_e6_c160"],
    ["cn_r1_k1_s1_c960"],
]
_SMALL_MINIMAL = [
    ["ds_r1_k3_s2_e1_c16"],
    ["ir_r1_k3_s2_e4.5_c24", "ir_r1_k3_s1_e3.67_c24"],
    ["ir_r1_k3_s2_e4_c40", "ir_r2_k3_s1_e6_c40"],
    ["ir_r2_k3_s1_e3_c48"],
    ["ir_r3_k3_s2_e6_c96"],
    ["cn_r1_k1_s1_c576"],
]
# timm's mobilenetv3_rw: the Large rows with no shortcut on the first block.
_LARGE_RW = [["ds_r1_k3_s1_e1_c16_nre_noskip"]] + _LARGE[1:]


def _halve_tail(stages, hidden: int):
    """torchvision's ``reduced_tail``: halve the last block stage, the last conv and the head."""
    from dataclasses import replace

    return stages[:-2] + tuple(tuple(replace(b, out=b.out // 2) for b in st) for st in stages[-2:]), hidden // 2


def _tf_port(spec: NetSpec) -> NetSpec:
    # timm's tf_mobilenetv3_*: bn_eps=BN_EPS_TF_DEFAULT (1e-3), momentum left at 0.1, pad_type="same"
    return spec.replace(pad_type="same", norm_eps=1e-3, norm_momentum=0.1, fixed_norm=True)


def v3_spec(large: bool = True, reduced_tail: bool = False, minimal: bool = False,
            depth_mult: float = 1.0, tf_port: bool = False) -> NetSpec:
    """The MobileNetV3-Large or -Small spec, optionally with the reduced tail, in its
    minimalistic form, depth-scaled, or as the TF port (see the module docstring)."""
    if minimal:
        rows = _LARGE_MINIMAL if large else _SMALL_MINIMAL
    else:
        rows = _LARGE if large else _SMALL
    stages = parse_stages(rows, depth_mult)
    hidden = 1280 if large else 1024
    if reduced_tail:
        stages, hidden = _halve_tail(stages, hidden)
    act = "relu" if minimal else "hard_swish"
    spec = NetSpec(
        family="mobilenetv3", stages=stages, stem=16, act=act, fix_stem_below=0.75,
        head=HeadSpec(hidden=hidden, norm=False, act=act),
        norm_eps=1e-3, norm_momentum=0.01, drop_rate=0.2,
        paper="https://arxiv.org/abs/1905.02244")
    return _tf_port(spec) if tf_port else spec


def v3_rw_spec(reduced_tail: bool = False) -> NetSpec:
    """timm's ``mobilenetv3_rw`` (trained by timm before the official release): the Large rows
    without the first block's shortcut, SE with the block's own activation and plain-rounded
    squeeze width (timm's ``SqueezeExcite`` defaults), no bias on the head's hidden layer,
    BatchNorm eps 1e-3 fixed by its definition, and the stem always scaled."""
    stages, hidden = parse_stages(_LARGE_RW), 1280
    if reduced_tail:
        stages, hidden = _halve_tail(stages, hidden)
    return NetSpec(
        family="mobilenetv3", stages=stages, stem=16, act="hard_swish",
        head=HeadSpec(hidden=hidden, norm=False, act="hard_swish", bias=False),
        norm_eps=1e-3, norm_momentum=0.1, fixed_norm=True, se_act=None, se_divisor=1, drop_rate=0.2,
        paper="https://arxiv.org/abs/1905.02244")


#: Registered variants: (name, large, width_mult, same architecture elsewhere[, v3_spec options]).
VARIANTS = [
    ("mobilenetv3_large_075", True, 0.75, {"timm": "mobilenetv3_large_075"}),
    ("mobilenetv3_large_100", True, 1.0,
     {"timm": "mobilenetv3_large_100", "torchvision": "mobilenet_v3_large"}),
    ("mobilenetv3_small_050", False, 0.5, {"timm": "mobilenetv3_small_050"}),
    ("mobilenetv3_small_075", False, 0.75, {"timm": "mobilenetv3_small_075"}),
    ("mobilenetv3_small_100", False, 1.0,
     {"timm": "mobilenetv3_small_100", "torchvision": "mobilenet_v3_small"}),
    ("mobilenetv3_large_150d", True, 1.5, {"timm": "mobilenetv3_large_150d"}, {"depth_mult": 1.2}),
    ("tf_mobilenetv3_large_075", True, 0.75, {"timm": "tf_mobilenetv3_large_075"}, {"tf_port": True}),
    ("tf_mobilenetv3_large_100", True, 1.0, {"timm": "tf_mobilenetv3_large_100"}, {"tf_port": True}),
    ("tf_mobilenetv3_large_minimal_100", True, 1.0, {"timm": "tf_mobilenetv3_large_minimal_100"},
     {"tf_port": True, "minimal": True}),
    ("tf_mobilenetv3_small_075", False, 0.75, {"timm": "tf_mobilenetv3_small_075"}, {"tf_port": True}),
    ("tf_mobilenetv3_small_100", False, 1.0, {"timm": "tf_mobilenetv3_small_100"}, {"tf_port": True}),
    ("tf_mobilenetv3_small_minimal_100", False, 1.0, {"timm": "tf_mobilenetv3_small_minimal_100"},
     {"tf_port": True, "minimal": True}),
]

#: timm's mobilenetv3_rw (:func:`v3_rw_spec`), registered beside the paper's variants.
RW_VARIANTS = [("mobilenetv3_rw", 1.0, {"timm": "mobilenetv3_rw"})]
