"""MobileNet-EdgeTPU (Google 2019, https://ai.googleblog.com/2019/11/introducing-next-generation-on-device.html)
and MobileNet-EdgeTPU-V2 (Google 2021, "Searching for Efficient Neural Architectures for On-Device
ML on Edge TPUs", https://arxiv.org/abs/2204.03475), as timm defines them
(``timm/models/efficientnet.py``, ``_gen_mobilenet_edgetpu``, after the TF Model Garden's
``official/projects/edgetpu/vision``).

Architectures searched for the Edge TPU: ReLU throughout, no SE, fused inverted bottlenecks
(``er``: a full kxk conv expands, Gupta & Tan 2019) in the high-resolution stages where a
depthwise conv is slow on the accelerator, inverted residuals (``ir``) later. V2 uses group
convs in some fused blocks (``gs``: channels per group of the expansion conv) and a 5x5 or 7x7
stem. The first stage is a 1x1 conv (with expansion 1 the official block is just its
projection). A 1x1 conv to 1280 (1344, 1408) + BN + ReLU before the pool is the head's
(timm's ``conv_head``), not a feature level. BatchNorm: PyTorch's defaults, as timm.
"""

from __future__ import annotations

from .spec import HeadSpec, NetSpec, parse_stages

_V1 = [
    ["cn_r1_k1_s1_c16"],                                  # 112^2
    ["er_r1_k3_s2_e8_c32", "er_r3_k3_s1_e4_c32"],         # 112 -> 56
    ["er_r1_k3_s2_e8_c48", "er_r3_k3_s1_e4_c48"],         # 56 -> 28
    ["ir_r1_k3_s2_e8_c96", "ir_r3_k3_s1_e4_c96"],         # 28 -> 14
    ["ir_r1_k3_s1_e8_c96_noskip", "ir_r3_k3_s1_e4_c96"],  # 14
    ["ir_r1_k5_s2_e8_c160", "ir_r3_k5_s1_e4_c160"],       # 14 -> 7
    ["ir_r1_k3_s1_e8_c192"],                              # 7
]


def _v2_rows(chs: list[int], gs: int) -> list[list[str]]:
    c = chs
    return [
        [f"cn_r1_k1_s1_c{c[0]}"],
        [f"er_r1_k3_s2_e8_c{c[1]}", f"er_r1_k3_s1_e4_gs{gs}_c{c[1]}"],
        [f"er_r1_k3_s2_e8_c{c[2]}", f"er_r1_k3_s1_e4_gs{gs}_c{c[2]}", f"er_r1_k3_s1_e4_c{c[2]}",
         f"er_r1_k3_s1_e4_gs{gs}_c{c[2]}"],
        [f"er_r1_k3_s2_e8_c{c[3]}", f"ir_r3_k3_s1_e4_c{c[3]}"],
        [f"ir_r1_k3_s1_e8_c{c[4]}", f"ir_r3_k3_s1_e4_c{c[4]}"],
        [f"ir_r1_k3_s2_e8_c{c[5]}", f"ir_r3_k3_s1_e4_c{c[5]}"],
        [f"ir_r1_k3_s1_e8_c{c[6]}"],
    ]


def _spec(rows: list[list[str]], stem: int, stem_k: int, head: int, paper: str) -> NetSpec:
    return NetSpec(
        family="mobilenet_edgetpu",
        stages=parse_stages(rows) + parse_stages([[f"cn_r1_k1_s1_c{head}_wfix"]]),
        stem=stem, stem_k=stem_k, act="relu", head=HeadSpec(hidden=0), drop_rate=0.0, paper=paper,
        last_stage_is_head=True)


_V2_PAPER = "https://arxiv.org/abs/2204.03475"
#: name -> spec
SPECS = {
    "mobilenet_edgetpu_100": _spec(
        _V1, 32, 3, 1280, "https://ai.googleblog.com/2019/11/introducing-next-generation-on-device.html"),
    # (stage channels, group size), stem, stem kernel, head width
    "mobilenet_edgetpu_v2_xs": _spec(_v2_rows([16, 32, 48, 96, 144, 160, 192], 64), 32, 3, 1280, _V2_PAPER),
    "mobilenet_edgetpu_v2_s": _spec(_v2_rows([24, 48, 64, 128, 160, 192, 256], 64), 64, 5, 1280, _V2_PAPER),
    "mobilenet_edgetpu_v2_m": _spec(_v2_rows([32, 64, 80, 160, 192, 240, 320], 64), 64, 5, 1344, _V2_PAPER),
    "mobilenet_edgetpu_v2_l": _spec(_v2_rows([32, 64, 96, 192, 240, 256, 384], 128), 64, 7, 1408, _V2_PAPER),
}

#: Registered variants: (name, width_mult, same architecture elsewhere).
VARIANTS = [(name, 1.0, {"timm": name}) for name in SPECS]
