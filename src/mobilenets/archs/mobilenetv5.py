"""MobileNetV5: the vision encoder of Gemma 3n (Google, 2025), as timm 1.0.31 defines it
(``timm/models/mobilenetv5.py``). There is no MobileNetV5 paper; its blocks are MobileNetV4's
(Qin et al. 2024, https://arxiv.org/abs/2404.10518): fused IB (``er``), Universal Inverted
Bottlenecks (``uir``) and Mobile MQA (``mqa``), with RMSNorm instead of BatchNorm, tanh-GELU,
layer scale 1e-5 on every ``uir`` / ``mqa`` block, a biased stem conv, and a multi-scale fusion
adapter (MSFA) as the neck: the last two feature levels (stride 16 and 32) are resized to the
stride-16 grid, concatenated, mixed by an FFN-form UIB (1x1 expand x2 + act, 1x1 project; no
shortcut), brought to a fixed 16x16 grid (average pooling when the grid divides it, else
bilinear) and RMS-normalised: ``forward_features`` is that ``(N, 2048, 16, 16)`` map.

Rows as in :mod:`.spec`. timm's MobileNetV5-Base table writes ``s2`` on its stage-2 ``mqa`` rows,
but timm's EfficientNet builder gives a stride only to the first block of a stage, so those
blocks run at stride 1 and are written ``s1`` here (``mqa`` blocks never stride).

Variants (timm's names):

* ``mobilenetv5_300m_enc``: timm's ``MobileNetV5Encoder``, Gemma 3n's vision tower: no classifier,
  ``forward`` returns the fused map; TensorFlow "SAME" padding (every strided conv pads
  asymmetrically, from the input size). It loads Gemma 3n checkpoints (keys under
  ``model.vision_tower.timm_model.``).
* ``mobilenetv5_300m``: the same trunk and MSFA with PyTorch's symmetric padding, global average
  pooling and a Linear classifier; timm's default configuration is the Gemma 3n weights with no
  classifier (``num_classes=0``), so that is the default here too.
* ``mobilenetv5_base``: a narrower, shallower trunk (timm's WIP classification configuration,
  1000 classes).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

from .spec import BlockSpec, NetSpec, parse_stages

# The blocks come from MobileNetV4's paper; the encoder itself is described only by its code.
_PAPER = "https://arxiv.org/abs/2404.10518 (MobileNetV4 blocks; Gemma 3n's vision encoder)"

_STEM_STAGES = [
    ["er_r1_k3_s2_e4_c128", "er_r2_k3_s1_e4_c128"],
    ["uir_r1_a3_k5_s2_e6_c256", "uir_r1_a5_k0_s1_e4_c256", "uir_r1_a3_k0_s1_e4_c256",
     "uir_r1_a5_k0_s1_e4_c256", "uir_r1_a3_k0_s1_e4_c256"],
]

MNV5_300M = parse_stages(_STEM_STAGES + [
    ["uir_r1_a5_k5_s2_e6_c640", "uir_r7_a5_k0_s1_e4_c640", "uir_r1_a0_k0_s1_e1_c640"]
    + ["mqa_r1_k3_s1_c640_h12_d64_v2", "uir_r1_a0_k0_s1_e2_c640"] * 14,
    ["uir_r1_a5_k5_s2_e6_c1280"] + ["mqa_r1_k3_s1_c1280_h16_d96", "uir_r1_a0_k0_s1_e2_c1280"] * 19,
])

MNV5_BASE = parse_stages(_STEM_STAGES + [
    ["uir_r1_a5_k5_s2_e6_c512", "uir_r2_a5_k0_s1_e4_c512", "uir_r1_a0_k0_s1_e1_c512"]
    + ["mqa_r1_k3_s1_c512_h8_d64", "uir_r1_a0_k0_s1_e2_c512"] * 6,
    ["uir_r1_a5_k5_s2_e6_c1024"] + ["mqa_r1_k3_s1_c1024_h16_d64", "uir_r1_a0_k0_s1_e2_c1024"] * 7,
])

PADDINGS = ("symmetric", "same")
INTERPOLATIONS = ("nearest", "bilinear")


@dataclass(frozen=True)
class MSFASpec:
    """The multi-scale fusion adapter (timm's ``MobileNetV5MultiScaleFusionAdapter``).

    Attributes:
        levels: the feature levels it fuses (indices into ``feature_info``; negative count from
            the end); the first one is the resolution the others are resized to.
        out: output channels (the model's ``num_features``; never width-scaled).
        resolution: side of the square output grid.
        expansion: expansion ratio of its FFN (1x1 expand -> act -> 1x1 project).
        interpolation: how the coarser levels are upsampled to the first one's grid.
    """

    levels: tuple[int, ...] = (-2, -1)
    out: int = 2048
    resolution: int = 16
    expansion: float = 2.0
    interpolation: str = "nearest"

    def __post_init__(self):
        if not self.levels or len(set(self.levels)) != len(self.levels):
            raise ValueError(f"msfa levels must be distinct feature levels, got {self.levels}")
        if self.out < 1 or self.resolution < 1:
            raise ValueError(f"msfa out and resolution must be >= 1, got {self.out}, {self.resolution}")
        if not self.expansion > 0:
            raise ValueError(f"msfa expansion must be > 0, got {self.expansion}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"msfa interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")


@dataclass(frozen=True)
class MobileNetV5Spec:
    """A MobileNetV5: a trunk (:class:`NetSpec`: stages, stem, activation, layer scale, the
    RMSNorm eps as ``norm_eps``, classifier dropout) with what MobileNetV5 adds to it.

    Attributes:
        name: the registry name.
        net: the trunk.
        msfa: the fusion neck.
        padding: ``"symmetric"`` (PyTorch's ``(k - 1) // 2``) or ``"same"`` (TensorFlow's SAME:
            strided convs pad asymmetrically, from the input size; Gemma 3n's encoder).
        stem_bias: the stem conv has a bias (before its RMSNorm), as in Gemma 3n.
        encoder: no pooling or classifier: ``forward`` returns the MSFA map (timm's
            ``MobileNetV5Encoder``).
        default_classes: the number of classes a model is built with unless told otherwise.
    """

    name: str
    net: NetSpec
    msfa: MSFASpec = field(default_factory=MSFASpec)
    padding: str = "symmetric"
    stem_bias: bool = True
    encoder: bool = False
    default_classes: int = 1000

    def __post_init__(self):
        if self.padding not in PADDINGS:
            raise ValueError(f"{self.name}: padding must be one of {PADDINGS}, got {self.padding!r}")
        n = len(self.net.stages) + 1  # the stem's level + one per stage
        if any(not -n <= i < n for i in self.msfa.levels):
            raise ValueError(f"{self.name}: msfa levels must be in [{-n}, {n - 1}] ({n} feature levels), "
                             f"got {self.msfa.levels}")
        if self.encoder and self.default_classes:
            raise ValueError(f"{self.name}: an encoder has no classifier: default_classes must be 0")

    # the trunk's fields, read through (the registry and the generic code read them off any spec)
    @property
    def family(self) -> str:
        return self.net.family

    @property
    def stages(self) -> tuple[tuple[BlockSpec, ...], ...]:
        return self.net.stages

    @property
    def paper(self) -> str:
        return self.net.paper

    def blocks(self) -> list[BlockSpec]:
        return self.net.blocks()

    def to_rows(self) -> list[list[str]]:
        return self.net.to_rows()

    def replace(self, **kw) -> "MobileNetV5Spec":
        return replace(self, **kw)


def _net(stages) -> NetSpec:
    # timm: stem 64 (fixed below width 1.0), GELU (tanh), RMSNorm eps 1e-6, layer scale 1e-5
    return NetSpec(family="mobilenetv5", stages=stages, stem=64, act="gelu_tanh", fix_stem_below=1.0,
                   layer_scale=1e-5, norm_eps=1e-6, drop_rate=0.0, paper=_PAPER)


def _spec(name: str, stages, padding: str = "symmetric", encoder: bool = False,
          default_classes: Optional[int] = None) -> MobileNetV5Spec:
    classes = (0 if encoder else 1000) if default_classes is None else default_classes
    return MobileNetV5Spec(name, _net(stages), padding=padding, encoder=encoder, default_classes=classes)


#: Registered variants, by name (timm's names).
SPECS = {
    "mobilenetv5_300m_enc": _spec("mobilenetv5_300m_enc", MNV5_300M, padding="same", encoder=True),
    "mobilenetv5_300m": _spec("mobilenetv5_300m", MNV5_300M, default_classes=0),
    "mobilenetv5_base": _spec("mobilenetv5_base", MNV5_BASE),
}
