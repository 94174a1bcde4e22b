"""Mobile-Former (Chen et al., CVPR 2022, https://arxiv.org/abs/2108.05895), all seven
ImageNet variants, as the official implementation (github.com/AAboys/MobileFormer,
``mobile_former.py``) defines them; the paper's Table 1 (Chen et al. 2022, arXiv:2108.05895) lists the same variants.

Rows (paper Table 1 notation): ``lite(e, s, c)`` the token-free bneck-lite after the stem
(3x3 depthwise with channel multiplier ``e``, stride ``s``, then 1x1 to ``c``);
``down(c)`` the stride-2 Mobile-Former block (depthwise x6, 1x1, depthwise x4, 1x1);
``block(e, c)`` a stride-1 Mobile-Former block with expansion ``e`` (the paper's ``[c:e]``).
Stages group the rows by resolution; the comments give the map size at 224 x 224.

The token count ``M`` and width ``d``, the head (1x1 conv to ``6 C`` -> FC ``hidden``) and the
grouped 1x1 convs of the 26M model are per variant; everything else (2 bridge heads, 4 Former
heads, FFN x2, dynamic-ReLU squeeze 4, PyTorch-default BatchNorm) is common.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


_PAPER = "https://arxiv.org/abs/2108.05895"
ROW_KINDS = ("lite", "down", "block")


@dataclass(frozen=True)
class MobileFormerRow:
    """One block row.

    Attributes:
        kind: ``"lite"`` (:class:`~mobilenets.blocks.mobileformer.LiteBottleneck`),
            ``"down"`` (Mobile-Former block with the stride-2
            :class:`~mobilenets.blocks.mobileformer.MobileDownsample`) or ``"block"``
            (Mobile-Former block with :class:`~mobilenets.blocks.mobileformer.MobileBottleneck`).
        out: output channels (before width scaling).
        stride: 1 or 2 (``down`` rows: 2).
        expand: lite: depthwise multiplier; down: first depthwise multiplier; block: expansion.
        expand2: down: second depthwise multiplier (unused otherwise).
    """

    kind: str
    out: int
    stride: int = 1
    expand: float = 1.0
    expand2: float = 0.0

    def __post_init__(self):
        if self.kind not in ROW_KINDS:
            raise ValueError(f"unknown Mobile-Former row kind {self.kind!r}; expected one of {ROW_KINDS}")
        if self.stride not in (1, 2):
            raise ValueError(f"row stride must be 1 or 2, got {self.stride}")
        if self.kind == "down" and (self.stride != 2 or self.expand2 <= 0):
            raise ValueError("a down row has stride 2 and two depthwise multipliers")
        if self.out <= 0 or self.expand <= 0:
            raise ValueError(f"row needs positive channels and expansion, got {self}")


def lite(expand: int, stride: int, out: int) -> MobileFormerRow:
    """bneck-lite: dw 3x3 (x ``expand``, ``stride``) + ReLU6 -> 1x1 to ``out``."""
    return MobileFormerRow("lite", out, stride, expand)


def down(out: int, expand1: float = 6, expand2: float = 4) -> MobileFormerRow:
    """Stride-2 Mobile-Former block to ``out`` channels."""
    return MobileFormerRow("down", out, 2, expand1, expand2)


def block(expand: float, out: int) -> MobileFormerRow:
    """Stride-1 Mobile-Former block ``[out:expand]``."""
    return MobileFormerRow("block", out, 1, expand)


@dataclass(frozen=True)
class MobileFormerSpec:
    """A whole Mobile-Former.

    Attributes:
        name: variant name. stem: stem conv channels (3x3 stride 2, BN, ReLU6).
        stages: tuple of stages (one per resolution), each a tuple of rows.
        num_tokens: ``M`` learned global tokens. token_dim: their width ``d``.
        head_hidden: hidden width of the classifier (``head_hidden_size``).
        head_expand: the head's 1x1 conv widens the final map ``head_expand`` times.
        groups: groups of every 1x1 conv (with channel shuffles; 26M only).
        bridge_heads, former_heads, ffn_expand, dyrelu_reduction: block settings.
        norm_eps, norm_momentum: BatchNorm settings (PyTorch defaults, as the official code).
        drop_rate: default classifier dropout (the official constructor's 0).
    """

    name: str
    stem: int
    stages: tuple[tuple[MobileFormerRow, ...], ...]
    num_tokens: int
    token_dim: int
    head_hidden: int
    head_expand: int = 6
    groups: int = 1
    bridge_heads: int = 2
    former_heads: int = 4
    ffn_expand: int = 2
    dyrelu_reduction: int = 4
    norm_eps: float = 1e-5
    norm_momentum: float = 0.1
    drop_rate: float = 0.0
    family: str = "mobileformer"
    paper: str = _PAPER
    official_name: str = field(default="", compare=False)

    def __post_init__(self):
        rows = self.rows()
        if not rows or rows[0].kind != "lite" or any(r.kind == "lite" for r in rows[1:]):
            raise ValueError("a Mobile-Former spec starts with exactly one lite row")
        for i, stage in enumerate(self.stages):
            if not stage:
                raise ValueError(f"stage {i} is empty")
            if i > 0 and stage[0].stride != 2:
                raise ValueError(f"stage {i} must start with a stride-2 row (stages are resolutions)")
            if any(r.stride != 1 for r in stage[1:]):
                raise ValueError(f"stage {i}: only its first row may have stride 2")

    def rows(self) -> list[MobileFormerRow]:
        """All rows, in order (the official ``features`` index)."""
        return [r for s in self.stages for r in s]

    def replace(self, **kw) -> "MobileFormerSpec":
        return replace(self, **kw)


MF_508M = MobileFormerSpec(
    name="mobileformer_508m", stem=24, num_tokens=6, token_dim=192, head_hidden=1920,
    official_name="mobile_former_508m",
    stages=(
        (lite(2, 1, 24),),                                  # 112x112: bneck-lite 24
        (down(40), block(3, 40)),                           # 56x56
        (down(72), block(3, 72)),                           # 28x28
        (down(128), block(4, 128), block(6, 176), block(6, 176)),  # 14x14
        (down(240), block(6, 240), block(6, 240)),          # 7x7 -> head 1440 -> 1920
    ))

MF_294M = MobileFormerSpec(
    name="mobileformer_294m", stem=16, num_tokens=6, token_dim=192, head_hidden=1920,
    official_name="mobile_former_294m",
    stages=(
        (lite(2, 1, 16),),                                  # 112x112: bneck-lite 16
        (down(24), block(4, 24)),                           # 56x56
        (down(48), block(4, 48)),                           # 28x28
        (down(96), block(4, 96), block(6, 128), block(6, 128)),    # 14x14
        (down(192), block(6, 192), block(6, 192)),          # 7x7 -> head 1152 -> 1920
    ))

MF_214M = MobileFormerSpec(
    name="mobileformer_214m", stem=12, num_tokens=6, token_dim=192, head_hidden=1600,
    official_name="mobile_former_214m",
    stages=(
        (lite(2, 1, 12),),                                  # 112x112: bneck-lite 12
        (down(20), block(3, 20)),                           # 56x56
        (down(40), block(4, 40)),                           # 28x28
        (down(80), block(4, 80), block(6, 112), block(6, 112)),    # 14x14
        (down(160), block(6, 160), block(6, 160)),          # 7x7 -> head 960 -> 1600
    ))

MF_151M = MobileFormerSpec(
    name="mobileformer_151m", stem=12, num_tokens=6, token_dim=192, head_hidden=1280,
    official_name="mobile_former_151m",
    stages=(
        (lite(2, 1, 12),),                                  # 112x112: bneck-lite 12
        (down(16), block(3, 16)),                           # 56x56
        (down(32), block(3, 32)),                           # 28x28
        (down(64), block(4, 64), block(6, 88), block(6, 88)),      # 14x14
        (down(128), block(6, 128), block(6, 128)),          # 7x7 -> head 768 -> 1280
    ))

MF_96M = MobileFormerSpec(
    name="mobileformer_96m", stem=12, num_tokens=4, token_dim=128, head_hidden=1280,
    official_name="mobile_former_96m",
    stages=(
        (lite(2, 1, 12),),                                  # 112x112: bneck-lite 12
        (down(16),),                                        # 56x56
        (down(32), block(3, 32)),                           # 28x28
        (down(64), block(4, 64), block(6, 88)),             # 14x14
        (down(128), block(6, 128)),                         # 7x7 -> head 768 -> 1280
    ))

MF_52M = MobileFormerSpec(
    name="mobileformer_52m", stem=8, num_tokens=3, token_dim=128, head_hidden=1024,
    official_name="mobile_former_52m",
    stages=(
        (lite(3, 2, 12), block(3, 12)),                     # 56x56: bneck-lite 12 (stride 2)
        (down(24), block(3, 24)),                           # 28x28
        (down(48), block(4, 48), block(6, 64)),             # 14x14
        (down(96), block(6, 96)),                           # 7x7 -> head 576 -> 1024
    ))

# 26M = 52M with every 1x1 conv in 4 groups (+ channel shuffles), official `group_num=4`.
MF_26M = MF_52M.replace(name="mobileformer_26m", groups=4, official_name="mobile_former_26m")

SPECS: dict[str, MobileFormerSpec] = {s.name: s for s in (
    MF_26M, MF_52M, MF_96M, MF_151M, MF_214M, MF_294M, MF_508M)}

