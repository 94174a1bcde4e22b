"""MobileNetV4 (Qin et al. 2024, https://arxiv.org/abs/2404.10518), Tables 10-13.

Rows: ``uir_a{start}_k{mid}`` is the Universal Inverted Bottleneck with start / middle
depthwise kernels (0 = absent: ``a0`` IB, ``k0`` ConvNeXt-like, both ExtraDW, neither FFN);
``er`` the fused IB; ``cn`` conv-BN-act; ``mqa_h{heads}_d{key_dim}_v{kv_stride}`` Mobile MQA.
Hybrid block order is the TF Model Garden / timm one (MobileNetV4 paper, Qin et al. 2024, Appendix Tables); the parity tests
against timm are the ground truth. Head: pool -> 1x1 960->1280 (no bias) + BN + act -> Linear.
Width variants scale every block (the last 960 conv included) but keep the 1280 head.
"""

from __future__ import annotations

from .spec import HeadSpec, NetSpec, parse_stages

_PAPER = "https://arxiv.org/abs/2404.10518"
_HEAD = HeadSpec(hidden=1280, norm=True)

CONV_SMALL = parse_stages([  # Table 10
    ["cn_r1_k3_s2_c32", "cn_r1_k1_s1_c32"],
    ["cn_r1_k3_s2_c96", "cn_r1_k1_s1_c64"],
    ["uir_r1_a5_k5_s2_e3_c96", "uir_r4_a0_k3_s1_e2_c96", "uir_r1_a3_k0_s1_e4_c96"],
    ["uir_r1_a3_k3_s2_e6_c128", "uir_r1_a5_k5_s1_e4_c128", "uir_r1_a0_k5_s1_e4_c128",
     "uir_r1_a0_k5_s1_e3_c128", "uir_r2_a0_k3_s1_e4_c128"],
    ["cn_r1_k1_s1_c960"],
])

CONV_MEDIUM = parse_stages([  # Table 11
    ["er_r1_k3_s2_e4_c48"],
    ["uir_r1_a3_k5_s2_e4_c80", "uir_r1_a3_k3_s1_e2_c80"],
    ["uir_r1_a3_k5_s2_e6_c160", "uir_r2_a3_k3_s1_e4_c160", "uir_r1_a3_k5_s1_e4_c160",
     "uir_r1_a3_k3_s1_e4_c160", "uir_r1_a3_k0_s1_e4_c160", "uir_r1_a0_k0_s1_e2_c160",
     "uir_r1_a3_k0_s1_e4_c160"],
    ["uir_r1_a5_k5_s2_e6_c256", "uir_r1_a5_k5_s1_e4_c256", "uir_r2_a3_k5_s1_e4_c256",
     "uir_r1_a0_k0_s1_e4_c256", "uir_r1_a3_k0_s1_e4_c256", "uir_r1_a3_k5_s1_e2_c256",
     "uir_r1_a5_k5_s1_e4_c256", "uir_r2_a0_k0_s1_e4_c256", "uir_r1_a5_k0_s1_e2_c256"],
    ["cn_r1_k1_s1_c960"],
])

CONV_LARGE = parse_stages([  # Table 12
    ["er_r1_k3_s2_e4_c48"],
    ["uir_r1_a3_k5_s2_e4_c96", "uir_r1_a3_k3_s1_e4_c96"],
    ["uir_r1_a3_k5_s2_e4_c192", "uir_r3_a3_k3_s1_e4_c192", "uir_r1_a3_k5_s1_e4_c192",
     "uir_r5_a5_k3_s1_e4_c192", "uir_r1_a3_k0_s1_e4_c192"],
    ["uir_r4_a5_k5_s2_e4_c512", "uir_r1_a5_k0_s1_e4_c512", "uir_r1_a5_k3_s1_e4_c512",
     "uir_r2_a5_k0_s1_e4_c512", "uir_r1_a5_k3_s1_e4_c512", "uir_r1_a5_k5_s1_e4_c512",
     "uir_r3_a5_k0_s1_e4_c512"],
    ["cn_r1_k1_s1_c960"],
])

HYBRID_MEDIUM = parse_stages([  # Table 13 (Hybrid-M)
    ["er_r1_k3_s2_e4_c48"],
    ["uir_r1_a3_k5_s2_e4_c80", "uir_r1_a3_k3_s1_e2_c80"],
    ["uir_r1_a3_k5_s2_e6_c160", "uir_r1_a0_k0_s1_e2_c160", "uir_r1_a3_k3_s1_e4_c160",
     "uir_r1_a3_k5_s1_e4_c160", "mqa_r1_k3_h4_s1_v2_d64_c160", "uir_r1_a3_k3_s1_e4_c160",
     "mqa_r1_k3_h4_s1_v2_d64_c160", "uir_r1_a3_k0_s1_e4_c160", "mqa_r1_k3_h4_s1_v2_d64_c160",
     "uir_r1_a3_k3_s1_e4_c160", "mqa_r1_k3_h4_s1_v2_d64_c160", "uir_r1_a3_k0_s1_e4_c160"],
    ["uir_r1_a5_k5_s2_e6_c256", "uir_r1_a5_k5_s1_e4_c256", "uir_r2_a3_k5_s1_e4_c256",
     "uir_r1_a0_k0_s1_e2_c256", "uir_r1_a3_k5_s1_e2_c256", "uir_r1_a0_k0_s1_e2_c256",
     "uir_r1_a0_k0_s1_e4_c256", "mqa_r1_k3_h4_s1_d64_c256", "uir_r1_a3_k0_s1_e4_c256",
     "mqa_r1_k3_h4_s1_d64_c256", "uir_r1_a5_k5_s1_e4_c256", "mqa_r1_k3_h4_s1_d64_c256",
     "uir_r1_a5_k0_s1_e4_c256", "mqa_r1_k3_h4_s1_d64_c256", "uir_r1_a5_k0_s1_e4_c256"],
    ["cn_r1_k1_s1_c960"],
])

HYBRID_LARGE = parse_stages([  # Table 13 (Hybrid-L)
    ["er_r1_k3_s2_e4_c48"],
    ["uir_r1_a3_k5_s2_e4_c96", "uir_r1_a3_k3_s1_e4_c96"],
    ["uir_r1_a3_k5_s2_e4_c192", "uir_r3_a3_k3_s1_e4_c192", "uir_r1_a3_k5_s1_e4_c192",
     "uir_r2_a5_k3_s1_e4_c192", "mqa_r1_k3_h8_s1_v2_d48_c192", "uir_r1_a5_k3_s1_e4_c192",
     "mqa_r1_k3_h8_s1_v2_d48_c192", "uir_r1_a5_k3_s1_e4_c192", "mqa_r1_k3_h8_s1_v2_d48_c192",
     "uir_r1_a5_k3_s1_e4_c192", "mqa_r1_k3_h8_s1_v2_d48_c192", "uir_r1_a3_k0_s1_e4_c192"],
    ["uir_r4_a5_k5_s2_e4_c512", "uir_r1_a5_k0_s1_e4_c512", "uir_r1_a5_k3_s1_e4_c512",
     "uir_r2_a5_k0_s1_e4_c512", "uir_r1_a5_k3_s1_e4_c512", "uir_r1_a5_k5_s1_e4_c512",
     "mqa_r1_k3_h8_s1_d64_c512", "uir_r1_a5_k0_s1_e4_c512", "mqa_r1_k3_h8_s1_d64_c512",
     "uir_r1_a5_k0_s1_e4_c512", "mqa_r1_k3_h8_s1_d64_c512", "uir_r1_a5_k0_s1_e4_c512",
     "mqa_r1_k3_h8_s1_d64_c512", "uir_r1_a5_k0_s1_e4_c512"],
    ["cn_r1_k1_s1_c960"],
])


def _spec(stages, stem: int, act: str = "relu", hybrid: bool = False, aa: str | None = None) -> NetSpec:
    return NetSpec(family="mobilenetv4", stages=stages, stem=stem, act=act, fix_stem_below=1.0,
                   head=_HEAD, layer_scale=1e-5 if hybrid else None, aa=aa, drop_rate=0.2,
                   paper=_PAPER)


SPECS = {
    "conv_small": _spec(CONV_SMALL, 32),
    "conv_medium": _spec(CONV_MEDIUM, 32),
    "conv_large": _spec(CONV_LARGE, 24),
    "hybrid_medium": _spec(HYBRID_MEDIUM, 32, hybrid=True),
    "hybrid_large": _spec(HYBRID_LARGE, 24, act="gelu", hybrid=True),
    "conv_aa_medium": _spec(CONV_MEDIUM, 32, aa="avg"),
    "conv_blur_medium": _spec(CONV_MEDIUM, 32, aa="blurpc"),
    "conv_aa_large": _spec(CONV_LARGE, 24, aa="avg"),
}

#: Registered variants: (name, spec key in ``SPECS``, width_mult); timm names them the same.
VARIANTS = [
    ("mobilenetv4_conv_small", "conv_small", 1.0), ("mobilenetv4_conv_small_035", "conv_small", 0.35),
    ("mobilenetv4_conv_small_050", "conv_small", 0.5), ("mobilenetv4_conv_medium", "conv_medium", 1.0),
    ("mobilenetv4_conv_large", "conv_large", 1.0), ("mobilenetv4_hybrid_medium", "hybrid_medium", 1.0),
    ("mobilenetv4_hybrid_medium_075", "hybrid_medium", 0.75),
    ("mobilenetv4_hybrid_large", "hybrid_large", 1.0),
    ("mobilenetv4_hybrid_large_075", "hybrid_large", 0.75),
    ("mobilenetv4_conv_aa_medium", "conv_aa_medium", 1.0),
    ("mobilenetv4_conv_blur_medium", "conv_blur_medium", 1.0),
    ("mobilenetv4_conv_aa_large", "conv_aa_large", 1.0),
]
