"""Published ImageNet-1k top-1 accuracies, each with its source and evaluation resolution.

The figures come from the papers (each entry names its table) and from the timm /
torchvision model cards. Where both a paper and a library figure exist for one model, the library figure (the public weights) is the
entry and the paper figure is noted in ``note``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

V1 = "MobileNetV1 paper (Howard et al. 2017, arXiv:1704.04861)"
V2 = "MobileNetV2 paper (Sandler et al. 2018, arXiv:1801.04381)"
TV = "torchvision model card"
MNV4 = "MobileNetV4 paper (Qin et al. 2024, arXiv:2404.10518)"
TIMM = "timm model card (mobilenetv4_conv_small, 224 px)"
MF = "Mobile-Former paper (Chen et al. 2022, arXiv:2108.05895)"


@dataclass(frozen=True)
class Accuracy:
    """One published top-1 figure.

    Attributes:
        model: registry name. top1: ImageNet-1k top-1 (%). resolution: eval input size.
        source: where the figure comes from. note: other figures for the same model.
    """

    model: str
    top1: float
    resolution: int
    source: str
    note: str = ""


_ENTRIES = [
    Accuracy("mobilenetv1_100", 70.6, 224, V1),
    Accuracy("mobilenetv1_075", 68.4, 224, V1),
    Accuracy("mobilenetv1_050", 63.7, 224, V1),
    Accuracy("mobilenetv1_025", 50.6, 224, V1),
    Accuracy("mobilenetv2_100", 71.878, 224, TV + " (mobilenet_v2)"),
    Accuracy("mobilenetv2_140", 74.7, 224, V2),
    Accuracy("mobilenetv3_large_100", 74.042, 224, TV + " (mobilenet_v3_large)"),
    Accuracy("mobilenetv3_small_100", 67.668, 224, TV + " (mobilenet_v3_small)"),
    Accuracy("mobilenetv4_conv_small", 73.756, 224, TIMM, note="paper: 73.8"),
    Accuracy("mobilenetv4_conv_medium", 79.9, 256, MNV4),
    Accuracy("mobilenetv4_conv_large", 82.9, 384, MNV4),
    Accuracy("mobilenetv4_hybrid_medium", 80.7, 256, MNV4),
    Accuracy("mobilenetv4_hybrid_large", 83.4, 384, MNV4),
    Accuracy("mobileformer_26m", 64.0, 224, MF),
    Accuracy("mobileformer_52m", 68.7, 224, MF),
    Accuracy("mobileformer_96m", 72.8, 224, MF),
    Accuracy("mobileformer_151m", 75.2, 224, MF),
    Accuracy("mobileformer_214m", 76.7, 224, MF),
    Accuracy("mobileformer_294m", 77.9, 224, MF),
    Accuracy("mobileformer_508m", 79.3, 224, MF),
]

#: ``{registry name: Accuracy}`` at the model's reference resolution
ACCURACY: dict = {e.model: e for e in _ENTRIES}

#: MobileNetV1 1.0 at reduced resolution (V1 paper, resolution multiplier rho)
ACCURACY_AT_RESOLUTION: dict = {
    ("mobilenetv1_100", 224): ACCURACY["mobilenetv1_100"],
    ("mobilenetv1_100", 192): Accuracy("mobilenetv1_100", 69.1, 192, V1),
    ("mobilenetv1_100", 160): Accuracy("mobilenetv1_100", 67.2, 160, V1),
    ("mobilenetv1_100", 128): Accuracy("mobilenetv1_100", 64.4, 128, V1),
}
for _e in _ENTRIES:
    ACCURACY_AT_RESOLUTION.setdefault((_e.model, _e.resolution), _e)


def top1(name: str, resolution: Optional[int] = None) -> Optional[float]:
    """Published top-1 of ``name`` (at ``resolution`` when given), or ``None`` if unknown."""
    e = ACCURACY.get(name) if resolution is None else ACCURACY_AT_RESOLUTION.get((name, resolution))
    return e.top1 if e else None
