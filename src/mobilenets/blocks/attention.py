"""Mobile MQA (MobileNetV4 section 3.3): multi-query attention with asymmetric spatial
reduction of keys and values."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import ConvNormAct
from ..layers.conv import NormLayer
from .conv_blocks import ResidualBlock


class MultiQueryAttention2d(nn.Module):
    """Multi-query attention over an NCHW feature map.

    ``num_heads`` query heads (1x1 conv to ``num_heads * key_dim``) share one key head and one
    value head. Keys and values each have their own optional depthwise kxk stride-``kv_stride``
    conv + BN before their 1x1 projection (the asymmetric K/V downsampling); the query can be
    average-pooled by ``query_stride`` (and the output bilinearly upsampled back). The head
    outputs are concatenated and projected back to ``out_chs`` by a 1x1 conv. No biases.

    Args:
        dim: input channels. out_chs: output channels (default ``dim``).
        num_heads, key_dim, value_dim: attention sizes (value_dim defaults to key_dim).
        kv_stride: spatial stride of the key/value depthwise downsampling (1: none).
        query_stride: spatial stride of the query pooling (1: none).
        dw_kernel: kernel size of the K/V depthwise downsampling convs.
    """

    def __init__(self, dim: int, out_chs: Optional[int] = None, num_heads: int = 8,
                 key_dim: int = 64, value_dim: Optional[int] = None, kv_stride: int = 1,
                 query_stride: int = 1, dw_kernel: int = 3, dilation: int = 1,
                 norm: NormLayer = nn.BatchNorm2d):
        super().__init__()
        out_chs = out_chs or dim
        value_dim = value_dim or key_dim
        self.num_heads, self.key_dim, self.value_dim = num_heads, key_dim, value_dim
        self.kv_stride, self.query_stride = kv_stride, query_stride
        self.scale = key_dim ** -0.5
        if query_stride > 1:
            self.q_pool = nn.AvgPool2d(query_stride)
            self.q_norm = norm(dim)
        else:  # unused (no parameters); present so TorchScript compiles the stride test in _project
            self.q_pool = self.q_norm = nn.Identity()
        self.q = nn.Conv2d(dim, num_heads * key_dim, 1, bias=False)

        def kv_down() -> nn.Module:
            if kv_stride == 1:
                return nn.Identity()
            return ConvNormAct(dim, dim, dw_kernel, kv_stride, dilation, groups=dim, norm=norm, act=None)

        self.k_down = kv_down()
        self.k = nn.Conv2d(dim, key_dim, 1, bias=False)
        self.v_down = kv_down()
        self.v = nn.Conv2d(dim, value_dim, 1, bias=False)
        self.proj = nn.Conv2d(num_heads * value_dim, out_chs, 1, bias=False)
        self.init_weights()

    def init_weights(self) -> None:
        """Xavier-uniform q / k / v / output projections (keeps the tiny-layer-scale hybrids
        stable from scratch, TF Model Garden init); the K/V downsampling convs keep PyTorch's
        default. The model's initialisation calls this instead of its own rules."""
        for m in (self.q, self.k, self.v, self.proj):
            nn.init.xavier_uniform_(m.weight)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m not in (self.q, self.k, self.v, self.proj):
                m.reset_parameters()
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_parameters()

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax attention weights ``(B, heads, Nq, Nkv)`` (for inspection and tests)."""
        q, k, _, _ = self._qkv(x)
        return torch.softmax((q * self.scale) @ k.transpose(-1, -2), dim=-1)

    def _project(self, x: torch.Tensor):
        """Projections in channel-major form: q ``(B, h, kd, Nq)`` (channel index = head *
        key_dim + d), the shared k ``(B, kd, Nkv)`` and v ``(B, vd, Nkv)``."""
        B = x.shape[0]
        xq = self.q_norm(self.q_pool(x)) if self.query_stride > 1 else x
        qh, qw = xq.shape[-2:]
        q = self.q(xq).reshape(B, self.num_heads, self.key_dim, qh * qw)
        k = self.k(self.k_down(x)).flatten(2)
        v = self.v(self.v_down(x)).flatten(2)
        return q, k, v, (qh, qw)

    def _qkv(self, x: torch.Tensor):
        """Token-major q ``(B, h, Nq, kd)``, k ``(B, 1, Nkv, kd)``, v ``(B, 1, Nkv, vd)`` (one
        shared key / value head, broadcast over the query heads)."""
        q, k, v, hw = self._project(x)
        return q.transpose(-1, -2), k.transpose(-1, -2).unsqueeze(1), v.transpose(-1, -2).unsqueeze(1), hw

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """The attention output ``(B, heads * value_dim, qh, qw)`` before the upsampling and the
        output projection, with PyTorch's fused kernels (flash / memory-efficient on GPU).
        Export swaps in a layout-friendly formulation of the same math
        (:mod:`mobilenets.deploy.export_swaps`)."""
        B = x.shape[0]
        q, k, v, (qh, qw) = self._qkv(x)
        h = self.num_heads
        o = F.scaled_dot_product_attention(q, k.expand(B, h, -1, -1), v.expand(B, h, -1, -1))
        # (B, h, N, vd) -> (B, h*vd, qh, qw), head-major channels
        return o.transpose(-1, -2).reshape(B, h * self.value_dim, qh, qw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.attend(x)
        if self.query_stride > 1:
            o = F.interpolate(o, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.proj(o)


class MobileMQA(ResidualBlock):
    """MobileNetV4 Mobile MQA block: BN on the input -> multi-query attention -> layer scale
    -> residual (MobileNetV4 paper, Qin et al. 2024, section 4.2).

    Args:
        in_chs, out_chs: channels. num_heads, key_dim, value_dim, kv_stride, query_stride,
        dw_kernel: see :class:`MultiQueryAttention2d`.
    """

    def __init__(self, in_chs: int, out_chs: int, num_heads: int = 8, key_dim: int = 64,
                 value_dim: Optional[int] = None, kv_stride: int = 1, query_stride: int = 1,
                 dw_kernel: int = 3, dilation: int = 1, norm: NormLayer = nn.BatchNorm2d,
                 skip: bool = True, drop_path: float = 0.0, layer_scale: Optional[float] = None):
        super().__init__(in_chs, out_chs, 1, skip, drop_path, layer_scale)
        self.norm = norm(in_chs)
        self.attn = MultiQueryAttention2d(in_chs, out_chs, num_heads, key_dim, value_dim, kv_stride,
                                          query_stride, dw_kernel, dilation, norm)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.norm(x))
