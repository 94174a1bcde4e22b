"""Mobile-Former blocks (Chen et al., "Mobile-Former: Bridging MobileNet and Transformer",
CVPR 2022, https://arxiv.org/abs/2108.05895).

Mobile-Former runs a MobileNet (*Mobile*, on the feature map) and a small transformer
(*Former*, on ``M`` learned global tokens of width ``d``) side by side, joined by two
lightweight cross-attention bridges (paper section 3, Fig. 1):

* :class:`MobileToFormer` pulls local features into the tokens;
* :class:`Former` mixes the tokens (self-attention + FFN);
* the Mobile sub-block (:class:`MobileBottleneck`, or :class:`MobileDownsample` where the
  resolution halves) uses :class:`DynamicReLU`, whose coefficients come from the first token;
* :class:`FormerToMobile` pushes the global tokens back into the feature map.

:class:`MobileFormerBlock` wires the four together; :class:`LiteBottleneck` is the token-free
block after the stem and :class:`MergedHead` the classifier that concatenates the pooled map
with the first token.

Where the paper's prose and the official implementation (github.com/AAboys/MobileFormer)
differ, these modules follow the code, because that is what the published weights expect
(official code, github.com/AAboys/MobileFormer ``dna_blocks.py``):

* the bridges project only the token side: keys and values of Mobile->Former are the raw
  feature map, and the query of Mobile<-Former is the raw feature map (no 1x1 convs);
* Mobile->Former scales its attended features by ``2 * hard_sigmoid(Linear(tokens))`` before
  the output projection; Mobile<-Former has no output projection;
* the Former's keys and values are the unprojected tokens (only the query is projected);
* all token updates use post-norm (``LayerNorm(tokens + update)``);
* the stride-2 block is dw -> 1x1 -> dw -> 1x1 with an inner shortcut (paper Fig. 4 shows it
  as one depthwise-separable pair).

Tokens are batch-first here, ``(N, M, d)`` (the official code keeps them ``(M, N, d)``).

Why one module: these are one paper's block, its parts defined against each other (the bridges
read the Mobile sub-block's channels, dynamic ReLU the Former's first token); none is used
outside Mobile-Former.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ..layers import ConvNormAct, DropPath
from ..layers.bn_stats import check_batch_stats
from ..layers.head import new_linear
from ..layers.pool import GlobalPool, UnsupportedPoolError
from ..layers.conv import NormLayer

__all__ = ["ChannelShuffle", "DynamicReLU", "FormerToMobile", "Former", "LiteBottleneck",
           "MergedHead", "MobileBottleneck", "MobileDownsample", "MobileFormerBlock",
           "MobileToFormer"]

torch.fx.wrap("check_batch_stats")  # a leaf under FX tracing (no branch on a traced shape)


def _drop_path(p: float) -> nn.Module:
    return DropPath(p) if p > 0 else nn.Identity()


def _check_heads(chs: int, heads: int, what: str) -> None:
    if heads < 1 or chs % heads:
        raise ValueError(f"{what}: {chs} channels do not split into {heads} heads")


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle (Zhang et al. 2018): view the channels as
    ``(groups, C / groups)``, transpose, flatten, so that the next grouped conv sees channels
    from every group. Mobile-Former-26M uses it with its grouped 1x1 convs.

    Args:
        groups: number of channel groups (``C`` must be divisible by it).
    """

    def __init__(self, groups: int):
        super().__init__()
        if groups < 1:
            raise ValueError(f"groups must be >= 1, got {groups}")
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if c % self.groups:
            raise ValueError(f"channel shuffle: {c} channels do not split into {self.groups} groups")
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


def _shuffle(groups: int, enabled: bool) -> nn.Module:
    return ChannelShuffle(groups) if enabled else nn.Identity()


class DynamicReLU(nn.Module):
    """Dynamic ReLU driven by the first global token (paper section 3.2, "Mobile sub-block";
    Chen et al. 2020, DY-ReLU-B with two linear pieces per channel).

    An MLP ``d -> d / reduction -> 2C`` (ReLU between, hard-sigmoid after) maps token 0 to
    ``h1, h2`` per channel; ``a1 = 2 (h1 - 0.5) + 1`` in ``[0, 2]``,
    ``a2 = 2 (h2 - 0.5)`` in ``[-1, 1]``, and ``y = max(a1 x, a2 x)``. With zero-mean
    coefficients it starts as (roughly) ``max(x, 0)``.

    Args:
        chs: channels ``C`` of the activated map.
        token_dim: token width ``d``.
        reduction: MLP squeeze ratio (4 in every variant).
        scale: spread of the coefficients (2 in the official code).
    """

    def __init__(self, chs: int, token_dim: int, reduction: int = 4, scale: float = 2.0):
        super().__init__()
        self.chs, self.scale = chs, scale
        self.fc1 = nn.Linear(token_dim, token_dim // reduction)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(token_dim // reduction, 2 * chs)
        self.gate = nn.Hardsigmoid()

    def coefficients(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a1, a2)``, each ``(N, C, 1, 1)``, from tokens ``(N, M, d)``."""
        h = self.gate(self.fc2(self.act(self.fc1(tokens[:, 0]))))
        h1, h2 = h[:, :self.chs], h[:, self.chs:]
        a1 = (h1 - 0.5) * self.scale + 1.0
        a2 = (h2 - 0.5) * self.scale
        return a1[:, :, None, None], a2[:, :, None, None]

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        a1, a2 = self.coefficients(tokens)
        return torch.maximum(x * a1, x * a2)


class MobileToFormer(nn.Module):
    """Mobile -> Former bridge (paper Eq. 1, official form): the tokens attend over the
    positions of the feature map.

    ``q = Linear(d -> C)(tokens)`` split into ``heads``; keys and values are the raw feature
    map (no projection); softmax over the ``H*W`` positions; the result is gated per channel by
    ``2 * hard_sigmoid(Linear(d -> C)(tokens))``, projected ``Linear(C -> d)``, added to the
    tokens, then LayerNorm (post-norm).

    Args:
        chs: feature-map channels ``C``. token_dim: token width ``d``.
        heads: attention heads (2; ``C`` must be divisible by it).
        drop_path: stochastic depth on the token update.
    """

    def __init__(self, chs: int, token_dim: int, heads: int = 2, drop_path: float = 0.0):
        super().__init__()
        _check_heads(chs, heads, "Mobile->Former")
        self.chs, self.heads = chs, heads
        self.scale = (chs // heads) ** -0.5
        self.q = nn.Linear(token_dim, chs)
        self.gate = nn.Linear(token_dim, chs)
        self.gate_act = nn.Hardsigmoid()
        self.proj = nn.Linear(chs, token_dim)
        self.norm = nn.LayerNorm(token_dim)
        self.drop_path = _drop_path(drop_path)

    def _qk(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        m = tokens.shape[1]
        q = self.q(tokens).reshape(n, m, self.heads, c // self.heads).transpose(1, 2)  # N h M C/h
        k = x.reshape(n, self.heads, c // self.heads, h * w)                           # N h C/h HW
        return q, k

    def attention(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Attention weights ``(N, heads, M, H*W)``; each token's row sums to 1 over positions."""
        q, k = self._qk(x, tokens)
        return ((q @ k) * self.scale).softmax(dim=-1)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        m = tokens.shape[1]
        q, k = self._qk(x, tokens)
        attn = ((q @ k) * self.scale).softmax(dim=-1)
        out = (attn @ k.transpose(-1, -2)).transpose(1, 2).reshape(n, m, c)  # values = keys
        out = out * (self.gate_act(self.gate(tokens)) * 2.0)
        return self.norm(tokens + self.drop_path(self.proj(out)))


class Former(nn.Module):
    """The Former sub-block (paper section 3.2): token self-attention + FFN, post-norm.

    ``q = Linear(d -> d)(tokens)``; keys and values are the unprojected tokens (official
    code); ``heads`` heads, softmax over tokens; ``Linear(d -> d)``; residual; LayerNorm. Then
    FFN ``Linear(d -> e d)`` GELU ``Linear(e d -> d)``; residual; LayerNorm.

    Args:
        token_dim: token width ``d``. heads: attention heads (4).
        ffn_expand: FFN expansion ``e`` (2).
        drop_path: stochastic depth on the attention update (the official code has none on
            the FFN).
    """

    def __init__(self, token_dim: int, heads: int = 4, ffn_expand: int = 2, drop_path: float = 0.0):
        super().__init__()
        _check_heads(token_dim, heads, "Former")
        self.heads = heads
        self.scale = (token_dim // heads) ** -0.5
        self.q = nn.Linear(token_dim, token_dim)
        self.proj = nn.Linear(token_dim, token_dim)
        self.norm1 = nn.LayerNorm(token_dim)
        self.fc1 = nn.Linear(token_dim, token_dim * ffn_expand)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(token_dim * ffn_expand, token_dim)
        self.norm2 = nn.LayerNorm(token_dim)
        self.drop_path = _drop_path(drop_path)

    def _qk(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, m, d = tokens.shape
        q = self.q(tokens).reshape(n, m, self.heads, d // self.heads).transpose(1, 2)  # N h M d/h
        k = tokens.reshape(n, m, self.heads, d // self.heads).transpose(1, 2)          # N h M d/h
        return q, k

    def attention(self, tokens: torch.Tensor) -> torch.Tensor:
        """Attention weights ``(N, heads, M, M)``; rows sum to 1 over the attended tokens."""
        q, k = self._qk(tokens)
        return ((q @ k.transpose(-1, -2)) * self.scale).softmax(dim=-1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n, m, d = tokens.shape
        q, k = self._qk(tokens)
        attn = ((q @ k.transpose(-1, -2)) * self.scale).softmax(dim=-1)
        out = (attn @ k).transpose(1, 2).reshape(n, m, d)
        tokens = self.norm1(tokens + self.drop_path(self.proj(out)))
        return self.norm2(tokens + self.fc2(self.act(self.fc1(tokens))))


class FormerToMobile(nn.Module):
    """Mobile <- Former bridge (paper Eq. 4, official form): every position attends over the
    tokens.

    The query is the raw feature map (no projection), split into ``heads`` channel groups;
    ``k = Linear(d -> C)(tokens)``, ``v = Linear(d -> C)(tokens)``; softmax over the ``M``
    tokens; the result is added to the map (no output projection).

    Args:
        chs: feature-map channels ``C``. token_dim: token width ``d``.
        heads: attention heads (2). drop_path: stochastic depth on the added update.
    """

    def __init__(self, chs: int, token_dim: int, heads: int = 2, drop_path: float = 0.0):
        super().__init__()
        _check_heads(chs, heads, "Mobile<-Former")
        self.chs, self.heads = chs, heads
        self.scale = (chs // heads) ** -0.5
        self.k = nn.Linear(token_dim, chs)
        self.v = nn.Linear(token_dim, chs)
        self.drop_path = _drop_path(drop_path)

    def _attention_t(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Attention weights transposed, ``(N, heads, M, H*W)``: computed as
        ``softmax_M(k q^T)`` so that the feature map stays channel-major (only the small token
        projections are permuted, never the map)."""
        n, c, h, w = x.shape
        m, hd = tokens.shape[1], c // self.heads
        q = x.reshape(n, self.heads, hd, h * w)                                       # N h C/h HW
        k = self.k(tokens).reshape(n, m, self.heads, hd).transpose(1, 2)              # N h M C/h
        return ((k @ q) * self.scale).softmax(dim=2)

    def attention(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Attention weights ``(N, heads, H*W, M)``; each position's row sums to 1 over tokens."""
        return self._attention_t(x, tokens).transpose(-1, -2)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        v = self.v(tokens).reshape(n, tokens.shape[1], self.heads, c // self.heads).permute(0, 2, 3, 1)  # N h C/h M
        out = (v @ self._attention_t(x, tokens)).reshape(n, c, h, w)  # out^T = v^T P^T, channel-major
        return x + self.drop_path(out)


class MobileBottleneck(nn.Module):
    """The stride-1 Mobile sub-block (paper section 3.2): 1x1 expand + BN + dynamic ReLU ->
    kxk depthwise + BN + dynamic ReLU -> 1x1 project + BN (linear). The block's shortcut lives
    in :class:`MobileFormerBlock`.

    With ``groups > 1`` (Mobile-Former-26M) both 1x1 convs are grouped and each is followed by
    a channel shuffle over the groups.

    Args:
        in_chs, out_chs: channels. expand: expansion ratio (mid = ``round(in_chs * expand)``).
        token_dim: token width (drives the dynamic ReLUs).
        stride, kernel_size: of the depthwise conv.
        groups: groups of the 1x1 convs.
        reduction: dynamic-ReLU MLP squeeze ratio.
        norm: norm layer factory.
        dilation: of the depthwise conv (``output_stride < 32``; not in the paper).
    """

    takes_tokens = True

    def __init__(self, in_chs: int, out_chs: int, expand: float, token_dim: int, stride: int = 1,
                 kernel_size: int = 3, groups: int = 1, reduction: int = 4,
                 norm: NormLayer = nn.BatchNorm2d, dilation: int = 1):
        super().__init__()
        mid = round(in_chs * expand)
        self.in_chs, self.out_chs, self.mid_chs, self.stride = in_chs, out_chs, mid, stride
        self.expand = ConvNormAct(in_chs, mid, 1, groups=groups, norm=norm, act=None)
        self.shuffle1 = _shuffle(groups, groups > 1)
        self.act1 = DynamicReLU(mid, token_dim, reduction)
        self.dw = ConvNormAct(mid, mid, kernel_size, stride, dilation, groups=mid, norm=norm, act=None)
        self.act2 = DynamicReLU(mid, token_dim, reduction)
        self.project = ConvNormAct(mid, out_chs, 1, groups=groups, norm=norm, act=None)
        self.shuffle2 = _shuffle(groups, groups > 1)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.shuffle1(self.expand(x)), tokens)
        x = self.act2(self.dw(x), tokens)
        return self.shuffle2(self.project(x))

    def expansion_tap(self) -> tuple[str, str, int]:
        """Where ``feature_location="expansion"`` reads this block: the projection's input."""
        return "project", "forward_pre", self.project.conv.in_channels


class MobileDownsample(nn.Module):
    """The stride-2 Mobile sub-block (official ``DnaBlock3``; paper Fig. 4 / section 4 draws it
    as one dw + pw pair): kxk depthwise stride 2 (``in -> e1 * in``, groups ``in``) + BN +
    dynamic ReLU -> 1x1 to ``out`` + BN (linear) -> kxk depthwise (``out -> e2 * out``, groups
    ``out``) + BN + dynamic ReLU -> 1x1 to ``out`` + BN, plus a shortcut from the first
    projection to the output.

    With ``groups > 1`` the 1x1 convs are grouped and each depthwise output is channel-shuffled
    over its input channels (so each group of the next 1x1 sees every input channel).

    Args:
        in_chs, out_chs: channels. expand1, expand2: depthwise channel multipliers (6, 4).
        token_dim: token width. stride, kernel_size: of the first depthwise conv.
        groups: groups of the 1x1 convs. reduction: dynamic-ReLU squeeze ratio.
        drop_path: stochastic depth on the inner residual branch.
        norm: norm layer factory.
        dilation: of both depthwise convs (``output_stride < 32``: the block then runs at
            stride 1 with the larger dilation already, torchvision's dilated MobileNetV3
            convention; not in the paper).
    """

    takes_tokens = True

    def __init__(self, in_chs: int, out_chs: int, token_dim: int, expand1: float = 6,
                 expand2: float = 4, stride: int = 2, kernel_size: int = 3, groups: int = 1,
                 reduction: int = 4, drop_path: float = 0.0, norm: NormLayer = nn.BatchNorm2d,
                 dilation: int = 1):
        super().__init__()
        mid1, mid2 = round(in_chs * expand1), round(out_chs * expand2)
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride
        self.dw1 = ConvNormAct(in_chs, mid1, kernel_size, stride, dilation, groups=in_chs, norm=norm, act=None)
        self.shuffle1 = _shuffle(in_chs, groups > 1)
        self.act1 = DynamicReLU(mid1, token_dim, reduction)
        self.pw1 = ConvNormAct(mid1, out_chs, 1, groups=groups, norm=norm, act=None)
        self.dw2 = ConvNormAct(out_chs, mid2, kernel_size, 1, dilation, groups=out_chs, norm=norm, act=None)
        self.shuffle2 = _shuffle(out_chs, groups > 1)
        self.act2 = DynamicReLU(mid2, token_dim, reduction)
        self.pw2 = ConvNormAct(mid2, out_chs, 1, groups=groups, norm=norm, act=None)
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        x = self.pw1(self.act1(self.shuffle1(self.dw1(x)), tokens))
        y = self.pw2(self.act2(self.shuffle2(self.dw2(x)), tokens))
        return self.drop_path(y) + x

    def expansion_tap(self) -> tuple[str, str, int]:
        """Where ``feature_location="expansion"`` reads this block: the last projection's input."""
        return "pw2", "forward_pre", self.pw2.conv.in_channels


class LiteBottleneck(nn.Module):
    """The token-free block after the stem (paper Table 1 "bneck-lite"): 3x3 depthwise with
    channel multiplier (``in -> e * in``, groups ``in``, stride) + BN + ReLU6 -> 1x1 to ``out``
    + BN (linear), with an identity shortcut when ``stride == 1 and in == out`` (official
    code; no stochastic depth on it).

    Args:
        in_chs, out_chs: channels. expand: depthwise channel multiplier (integer).
        stride: depthwise stride. groups: groups of the 1x1 conv (with a channel shuffle over
            the input channels before it when > 1). norm: norm layer factory.
    """

    takes_tokens = False

    def __init__(self, in_chs: int, out_chs: int, expand: int, stride: int = 1, groups: int = 1,
                 norm: NormLayer = nn.BatchNorm2d):
        super().__init__()
        mid = in_chs * int(expand)
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride
        self.has_skip = stride == 1 and in_chs == out_chs
        self.dw = ConvNormAct(in_chs, mid, 3, stride, groups=in_chs, norm=norm, act="relu6")
        self.shuffle = _shuffle(in_chs, groups > 1)
        self.project = ConvNormAct(mid, out_chs, 1, groups=groups, norm=norm, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.shuffle(self.dw(x)))
        return y + x if self.has_skip else y

    def expansion_tap(self) -> tuple[str, str, int]:
        """Where ``feature_location="expansion"`` reads this block: the projection's input."""
        return "project", "forward_pre", self.project.conv.in_channels


class MobileFormerBlock(nn.Module):
    """One Mobile-Former block (paper Fig. 1 and section 3.2, official order):

    1. Mobile->Former on the block input updates the tokens;
    2. Former updates the tokens;
    3. the Mobile sub-block runs on the block input, its dynamic ReLUs driven by the updated
       first token;
    4. identity shortcut (with stochastic depth) when ``stride == 1 and in == out``;
    5. Mobile<-Former adds the tokens' contribution to the output.

    ``forward(x, tokens) -> (x, tokens)``.

    Args:
        mobile: the Mobile sub-block (:class:`MobileBottleneck` or :class:`MobileDownsample`),
            with ``in_chs``, ``out_chs`` and ``stride`` attributes.
        token_dim: token width ``d``.
        bridge_heads: heads of both bridges (2). former_heads: Former heads (4).
        ffn_expand: Former FFN expansion (2).
        drop_path: stochastic depth of the bridges, the Former and the shortcut.
        skip: the identity shortcut (default: ``stride == 1 and in == out``; a downsampling
            block whose stride became a dilation keeps none, as in the MobileNets).
    """

    takes_tokens = True

    def __init__(self, mobile: nn.Module, token_dim: int, bridge_heads: int = 2,
                 former_heads: int = 4, ffn_expand: int = 2, drop_path: float = 0.0,
                 skip: Optional[bool] = None):
        super().__init__()
        in_chs, out_chs, stride = mobile.in_chs, mobile.out_chs, mobile.stride
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride
        self.has_skip = (stride == 1 and in_chs == out_chs) if skip is None else skip
        self.to_former = MobileToFormer(in_chs, token_dim, bridge_heads, drop_path)
        self.former = Former(token_dim, former_heads, ffn_expand, drop_path)
        self.mobile = mobile
        self.to_mobile = FormerToMobile(out_chs, token_dim, bridge_heads, drop_path)
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.former(self.to_former(x, tokens))
        y = self.mobile(x, tokens)
        if self.has_skip:
            y = self.drop_path(y) + x
        return self.to_mobile(y, tokens), tokens

    def expansion_tap(self) -> tuple[str, str, int]:
        """Where ``feature_location="expansion"`` reads this block: its Mobile sub-block's tap."""
        rel, hook, chs = self.mobile.expansion_tap()
        return f"mobile.{rel}", hook, chs


class MergedHead(nn.Module):
    """Mobile-Former classifier (paper section 4, official ``MergeClassifier``): 1x1 conv
    ``C -> expand * C`` + BN + ReLU6 -> global average pool -> h-swish -> concatenate the first
    token -> ``Linear(expand * C + d -> hidden)`` + BN1d + h-swish -> dropout -> ``Linear``.

    ``forward(x, tokens, pre_logits=False)``: ``x`` the final feature map, ``tokens``
    ``(N, M, d)``; ``pre_logits=True`` returns the ``hidden`` vector.

    ``pool_type`` (timm's ``global_pool``): ``"avg"`` (the paper's), ``"max"`` or ``"avgmax"``
    (the same width); ``""``: no pooling, the head returns the expanded map ``(N, expand * C, H,
    W)`` (what it would pool; the token joins only pooled vectors). ``"catavgmax"`` would double
    the width the hidden Linear was built for: refused.

    Args:
        in_chs: channels of the final map. token_dim: token width.
        hidden: hidden width (``head_hidden_size``). num_classes: outputs (0: no classifier).
        expand: channel expansion of the 1x1 conv (6).
        groups: groups of the 1x1 conv (channel shuffle before it when > 1).
        drop_rate: dropout before the classifier.
        norm: norm layer factory for the conv's BN.
        pool_type: see above.
    """

    def __init__(self, in_chs: int, token_dim: int, hidden: int, num_classes: int = 1000,
                 expand: int = 6, groups: int = 1, drop_rate: float = 0.0,
                 norm: NormLayer = nn.BatchNorm2d, pool_type: str = "avg"):
        super().__init__()
        self.in_chs, self.hidden_size = in_chs, hidden
        self.pool = GlobalPool(self._check_pool(pool_type))
        self.shuffle = _shuffle(groups, groups > 1)
        self.expand = ConvNormAct(in_chs, in_chs * expand, 1, groups=groups, norm=norm, act="relu6")
        self.pool_act = nn.Hardswish()
        self.hidden = nn.Linear(in_chs * expand + token_dim, hidden)
        self.norm = nn.BatchNorm1d(hidden)
        self.act = nn.Hardswish()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity()

    @staticmethod
    def _check_pool(pool_type: str) -> str:
        if pool_type == "catavgmax":
            raise UnsupportedPoolError("Mobile-Former's head concatenates the pooled map with a token into a "
                                       "hidden Linear sized for one pooled vector: global_pool='catavgmax' would "
                                       "double it; use 'avg', 'max', 'avgmax' or ''")
        return pool_type

    def reset(self, num_classes: int, pool_type: Optional[str] = None) -> None:
        """Replace the final Linear (on the head's device / dtype, in its mode); ``pool_type``:
        change the pooling too (``None`` keeps it)."""
        if pool_type is not None:
            self.pool = GlobalPool(self._check_pool(pool_type))
        self.fc = new_linear(self, self.hidden_size, num_classes)
        self.train(self.training)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.pool.pool_type != "":
            check_batch_stats(x, self.training, "Mobile-Former head")
        x = self.pool(self.expand(self.shuffle(x)))
        if self.pool.pool_type == "":  # pooling disabled: the map the head would pool
            return x
        x = self.act(self.norm(self.hidden(torch.cat([self.pool_act(x), tokens[:, 0]], dim=1))))
        if pre_logits:
            return x
        return self.fc(self.drop(x))
