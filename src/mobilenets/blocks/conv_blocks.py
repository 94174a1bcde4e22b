"""Convolutional blocks: V1 depthwise-separable, V2/V3 inverted residual, V4 fused IB and
Universal Inverted Bottleneck, and the plain conv block."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ..layers import ConvNormAct, DropPath, LayerScale, SqueezeExcite
from ..layers.activations import ActLike
from ..layers.conv import NormLayer


class ResidualBlock(nn.Module):
    """Base for blocks with an identity shortcut when ``stride == 1 and in == out``.

    Subclasses implement :meth:`branch`; this class adds optional layer scale, stochastic
    depth and the shortcut, so every block handles them the same way.
    """

    #: shape facts for builders and tasks, not for TorchScript (which would compile properties)
    __jit_unused_properties__ = ['pre_stride_chs']

    def __init__(self, in_chs: int, out_chs: int, stride: int, skip: bool = True,
                 drop_path: float = 0.0, layer_scale: Optional[float] = None):
        super().__init__()
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride
        self.has_skip = skip and stride == 1 and in_chs == out_chs
        self.layer_scale = LayerScale(out_chs, layer_scale) if layer_scale is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def branch(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def expansion_tap(self) -> Optional[tuple[str, str, int]]:
        """Where ``feature_location="expansion"`` reads this block: ``(submodule, hook type,
        channels)``, by default the input of its ``project`` conv (the expanded map after the
        depthwise conv and SE, timm's tap); ``None`` (the block output) without one."""
        project = getattr(self, "project", None)
        if project is None:
            return None
        return "project", "forward_pre", project.conv.in_channels

    def _shortcut(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = self.layer_scale(y)
        if self.has_skip:
            y = self.drop_path(y) + x
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._shortcut(self.branch(x), x)

    def expands_before_stride(self) -> bool:
        """Whether the block has a 1x1 expansion that runs at the input resolution, before its
        stride (inverted residuals, and UIBs whose stride sits on the middle depthwise): SSDLite
        reads that expanded map as its stride-16 feature (torchvision's "C4 expansion")."""
        return False

    @property
    def pre_stride_chs(self) -> int:
        """Channels of the map :meth:`forward_pre_stride` returns (blocks that
        :meth:`expands_before_stride`)."""
        return self.mid_chs

    def forward_pre_stride(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(expanded map, block output)`` in one pass, for blocks that
        :meth:`expands_before_stride`: the expansion conv's output (after its activation),
        before the block's stride, and what ``forward(x)`` returns."""
        e = self._expand(x)
        return e, self._shortcut(self._after_expansion(e), x)

    def _expand(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} has no expansion before its stride")

    def _after_expansion(self, e: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} has no expansion before its stride")


class ConvBlock(ConvNormAct):
    """A plain conv-BN-act used as a block (MobileNetV4 ``cn`` rows and the last 1x1 conv of
    V2/V3/V4). Same parameters as :class:`ConvNormAct`."""

    #: shape facts for builders and tasks, not for TorchScript (which would compile properties)
    __jit_unused_properties__ = ['out_chs', 'stride', 'in_chs']

    @property
    def out_chs(self) -> int:
        return self.conv.out_channels

    @property
    def stride(self) -> int:
        s = self.conv.stride[0]
        return s * (2 if not isinstance(self.aa, nn.Identity) else 1)


class DepthwiseSeparable(ResidualBlock):
    """MobileNetV1 depthwise-separable conv (paper Fig. 3): dw kxk + BN + act, optional SE,
    1x1 pointwise + BN (+ act in V1; linear where V2/V3 use it as their first block).

    Args:
        in_chs, out_chs: channels.
        kernel_size, stride, dilation: of the depthwise conv.
        se_chs: SE squeeze channels (0: no SE).
        pw_act: activation after the pointwise conv (True for V1).
        skip: allow the identity shortcut (False for V1).
        se_act: activation inside the SE (V3: ReLU). pad_type: conv padding (``ConvNormAct``).
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, se_chs: int = 0, pw_act: bool = False, skip: bool = True,
                 act: ActLike = "relu", norm: NormLayer = nn.BatchNorm2d, aa: Optional[str] = None,
                 drop_path: float = 0.0, layer_scale: Optional[float] = None, se_act: ActLike = "relu",
                 pad_type: str = ""):
        super().__init__(in_chs, out_chs, stride, skip, drop_path, layer_scale)
        self.dw = ConvNormAct(in_chs, in_chs, kernel_size, stride, dilation, groups=in_chs,
                              norm=norm, act=act, aa=aa, pad_type=pad_type)
        self.se = SqueezeExcite(in_chs, se_chs, act=se_act) if se_chs else nn.Identity()
        self.pw = ConvNormAct(in_chs, out_chs, 1, norm=norm, act=act if pw_act else None, pad_type=pad_type)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.se(self.dw(x)))

    def expansion_tap(self) -> tuple[str, str, int]:
        """Where ``feature_location="expansion"`` reads this block: the input of the pointwise
        conv (after the depthwise conv and SE)."""
        return "pw", "forward_pre", self.pw.conv.in_channels


class InvertedResidual(ResidualBlock):
    """MobileNetV2 inverted residual with linear bottleneck (V2 paper Fig. 3b / Table 1),
    with the V3 squeeze-and-excite after the depthwise conv (V3 paper Fig. 4).

    1x1 expand to ``mid_chs`` + BN + act -> dw kxk + BN + act -> [SE] -> 1x1 project + BN.
    ``se_act``: activation inside the SE (V3: ReLU); ``pad_type``: conv padding (``ConvNormAct``).
    """

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, kernel_size: int = 3,
                 stride: int = 1, dilation: int = 1, se_chs: int = 0, act: ActLike = "relu6",
                 norm: NormLayer = nn.BatchNorm2d, aa: Optional[str] = None, skip: bool = True,
                 drop_path: float = 0.0, layer_scale: Optional[float] = None, se_act: ActLike = "relu",
                 pad_type: str = ""):
        super().__init__(in_chs, out_chs, stride, skip, drop_path, layer_scale)
        self.mid_chs = mid_chs
        self.expand = ConvNormAct(in_chs, mid_chs, 1, norm=norm, act=act, pad_type=pad_type)
        self.dw = ConvNormAct(mid_chs, mid_chs, kernel_size, stride, dilation, groups=mid_chs,
                              norm=norm, act=act, aa=aa, pad_type=pad_type)
        self.se = SqueezeExcite(mid_chs, se_chs, act=se_act) if se_chs else nn.Identity()
        self.project = ConvNormAct(mid_chs, out_chs, 1, norm=norm, act=None, pad_type=pad_type)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self._after_expansion(self._expand(x))

    def expands_before_stride(self) -> bool:
        return True

    def _expand(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(x)

    def _after_expansion(self, e: torch.Tensor) -> torch.Tensor:
        return self.project(self.se(self.dw(e)))


class FusedIB(ResidualBlock):
    """Fused inverted bottleneck (MobileNetV4 section 3.2; EfficientNet-EdgeTPU "fused MBConv",
    Gupta & Tan 2019; timm's ``EdgeResidual``): kxk conv expand with stride + BN + act -> 1x1
    project + BN. ``group_size`` > 0 makes the expansion a group conv with ``mid_chs //
    group_size`` groups (MobileNet-EdgeTPU-V2's group-conv fused IBNs; the group count comes
    from the conv's output channels, as in timm's ``EdgeResidual``)."""

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, kernel_size: int = 3,
                 stride: int = 1, dilation: int = 1, act: ActLike = "relu",
                 norm: NormLayer = nn.BatchNorm2d, aa: Optional[str] = None, skip: bool = True,
                 drop_path: float = 0.0, layer_scale: Optional[float] = None, group_size: int = 0,
                 pad_type: str = ""):
        super().__init__(in_chs, out_chs, stride, skip, drop_path, layer_scale)
        groups = mid_chs // group_size if group_size else 1
        if group_size and (mid_chs % group_size or in_chs % groups):
            raise ValueError(f"fused IB: group_size {group_size} must divide the expanded channels ({mid_chs}) "
                             f"into groups that divide the input channels ({in_chs}); pick a width whose "
                             f"channels split into groups of {group_size} (timm's EdgeResidual has the same limit)")
        self.mid_chs = mid_chs
        self.expand = ConvNormAct(in_chs, mid_chs, kernel_size, stride, dilation,
                                  groups=groups, norm=norm, act=act, aa=aa,
                                  pad_type=pad_type)
        self.project = ConvNormAct(mid_chs, out_chs, 1, norm=norm, act=None, pad_type=pad_type)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.expand(x))


class UniversalInvertedBottleneck(ResidualBlock):
    """Universal Inverted Bottleneck (MobileNetV4 section 3.1, Fig. 4).

    Optional start depthwise (kxk + BN, no act) -> 1x1 expand + BN + act -> optional middle
    depthwise (kxk + BN + act) -> 1x1 project + BN -> optional layer scale -> residual.
    The four instantiations: IB (middle only), ConvNeXt-like (start only), ExtraDW (both),
    FFN (neither). The stride sits on the middle depthwise when there is one, else on the
    start depthwise.

    Args:
        start_k: start depthwise kernel (0: none). mid_k: middle depthwise kernel (0: none).
        mid_chs: expanded channels (``make_divisible(in_chs * expand, 8)``).
        pad_type: conv padding (``ConvNormAct``).
    """

    #: shape facts for builders and tasks, not for TorchScript (which would compile properties)
    __jit_unused_properties__ = ['kind', 'pre_stride_chs']

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, start_k: int = 0, mid_k: int = 3,
                 stride: int = 1, dilation: int = 1, act: ActLike = "relu",
                 norm: NormLayer = nn.BatchNorm2d, aa: Optional[str] = None, skip: bool = True,
                 drop_path: float = 0.0, layer_scale: Optional[float] = None, pad_type: str = ""):
        super().__init__(in_chs, out_chs, stride, skip, drop_path, layer_scale)
        self.mid_chs = mid_chs
        if stride > 1 and not (start_k or mid_k):
            raise ValueError("a strided UIB needs a start or middle depthwise conv (FFN cannot stride)")
        self.start_k, self.mid_k = start_k, mid_k
        self.dw_start = (ConvNormAct(in_chs, in_chs, start_k, stride if not mid_k else 1, dilation,
                                     groups=in_chs, norm=norm, act=None, aa=aa, pad_type=pad_type)
                         if start_k else nn.Identity())
        self.expand = ConvNormAct(in_chs, mid_chs, 1, norm=norm, act=act, pad_type=pad_type)
        self.dw_mid = (ConvNormAct(mid_chs, mid_chs, mid_k, stride, dilation, groups=mid_chs,
                                   norm=norm, act=act, aa=aa, pad_type=pad_type)
                       if mid_k else nn.Identity())
        self.project = ConvNormAct(mid_chs, out_chs, 1, norm=norm, act=None, pad_type=pad_type)

    @property
    def kind(self) -> str:
        """Which UIB instantiation this is: ``IB``, ``ConvNeXt``, ``ExtraDW`` or ``FFN``."""
        return {(False, True): "IB", (True, False): "ConvNeXt", (True, True): "ExtraDW",
                (False, False): "FFN"}[(bool(self.start_k), bool(self.mid_k))]

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self._after_expansion(self._expand(x))

    def expands_before_stride(self) -> bool:
        # the stride sits on the middle depthwise when there is one (else on the start one)
        return bool(self.mid_k) or self.stride == 1

    def _expand(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.dw_start(x))

    def _after_expansion(self, e: torch.Tensor) -> torch.Tensor:
        return self.project(self.dw_mid(e))
