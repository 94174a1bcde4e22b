"""Unit tests of the building blocks."""

import pytest
import torch
import torch.nn as nn

from mobilenets.blocks import (DepthwiseSeparable, FusedIB, InvertedResidual, MobileMQA,
                               MultiQueryAttention2d, UniversalInvertedBottleneck)
from mobilenets.layers import (BlurPool2d, ConvNormAct, DropPath, LayerScale, SqueezeExcite,
                               create_aa, get_act)


def naive_mqa(attn: MultiQueryAttention2d, x: torch.Tensor) -> torch.Tensor:
    """Multi-query attention written out head by head, as the paper describes it."""
    B, C, H, W = x.shape
    q = attn.q(x).reshape(B, attn.num_heads, attn.key_dim, H * W)
    k = attn.k(attn.k_down(x)).flatten(2)  # (B, kd, M)
    v = attn.v(attn.v_down(x)).flatten(2)  # (B, vd, M)
    outs = []
    for h in range(attn.num_heads):
        logits = q[:, h].transpose(1, 2) @ k / attn.key_dim ** 0.5  # (B, N, M)
        outs.append((logits.softmax(-1) @ v.transpose(1, 2)).transpose(1, 2))  # (B, vd, N)
    return attn.proj(torch.cat(outs, 1).reshape(B, -1, H, W))


@pytest.mark.parametrize("kv_stride", [1, 2])
@pytest.mark.parametrize("size", [(8, 8), (7, 11)])
def test_mqa_matches_naive(kv_stride, size):
    torch.manual_seed(0)
    attn = MultiQueryAttention2d(32, num_heads=4, key_dim=16, kv_stride=kv_stride).eval()
    x = torch.randn(2, 32, *size)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), naive_mqa(attn, x), rtol=1e-4, atol=1e-5)


def test_mqa_kv_downsampling_and_weights():
    attn = MultiQueryAttention2d(16, num_heads=2, key_dim=8, kv_stride=2).eval()
    x = torch.randn(1, 16, 9, 12)
    w = attn.attention_weights(x)
    assert w.shape == (1, 2, 9 * 12, 5 * 6)  # keys/values at stride 2 (ceil), queries full size
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 2, 108))
    assert attn.k.weight.shape == (8, 16, 1, 1) and attn.v.weight.shape == (8, 16, 1, 1)  # one K/V head
    assert attn.q.weight.shape == (16, 16, 1, 1)
    assert all(m.bias is None for m in (attn.q, attn.k, attn.v, attn.proj))


def test_mqa_query_stride():
    attn = MultiQueryAttention2d(16, num_heads=2, key_dim=8, query_stride=2).eval()
    x = torch.randn(1, 16, 8, 10)
    assert attn(x).shape == x.shape
    assert attn.attention_weights(x).shape == (1, 2, 4 * 5, 80)


def test_mobile_mqa_block_residual_and_gradients():
    blk = MobileMQA(32, 32, num_heads=4, key_dim=8, kv_stride=2, layer_scale=1e-5)
    x = torch.randn(2, 32, 6, 6, requires_grad=True)
    y = blk(x)
    assert y.shape == x.shape and blk.has_skip
    assert torch.allclose(y, x, atol=1e-3)  # tiny layer scale: close to identity at init
    y.sum().backward()
    assert all(p.grad is not None for p in blk.parameters())


@pytest.mark.parametrize("start_k,mid_k,kind", [(0, 3, "IB"), (3, 0, "ConvNeXt"), (3, 5, "ExtraDW"), (0, 0, "FFN")])
def test_uib_instantiations(start_k, mid_k, kind):
    blk = UniversalInvertedBottleneck(16, 16, 64, start_k, mid_k)
    assert blk.kind == kind
    assert isinstance(blk.dw_start, nn.Identity) == (start_k == 0)
    assert isinstance(blk.dw_mid, nn.Identity) == (mid_k == 0)
    if start_k:
        assert isinstance(blk.dw_start.act, nn.Identity)  # start dw has no activation
        assert blk.dw_start.conv.groups == 16
    if mid_k:
        assert blk.dw_mid.conv.groups == 64 and not isinstance(blk.dw_mid.act, nn.Identity)
    assert isinstance(blk.project.act, nn.Identity)  # linear bottleneck
    x = torch.randn(1, 16, 9, 9)
    assert blk(x).shape == x.shape and blk.has_skip


def test_uib_stride_placement():
    extra = UniversalInvertedBottleneck(16, 32, 64, 3, 5, stride=2)
    assert extra.dw_start.conv.stride == (1, 1) and extra.dw_mid.conv.stride == (2, 2)
    convnext = UniversalInvertedBottleneck(16, 32, 64, 3, 0, stride=2)
    assert convnext.dw_start.conv.stride == (2, 2)
    assert convnext(torch.randn(1, 16, 9, 9)).shape == (1, 32, 5, 5)
    with pytest.raises(ValueError, match="FFN cannot stride"):
        UniversalInvertedBottleneck(16, 32, 64, 0, 0, stride=2)


def test_inverted_residual_v2_and_v3():
    v2 = InvertedResidual(24, 24, 144, 3, act="relu6")
    assert isinstance(v2.expand.act, nn.ReLU6) and isinstance(v2.project.act, nn.Identity)
    assert v2.has_skip and isinstance(v2.se, nn.Identity)
    v3 = InvertedResidual(40, 80, 240, 5, stride=2, se_chs=64, act="hard_swish")
    assert isinstance(v3.se, SqueezeExcite) and v3.se.fc1.out_channels == 64 and not v3.has_skip
    assert v3(torch.randn(1, 40, 14, 14)).shape == (1, 80, 7, 7)


def test_depthwise_separable_v1_and_fused_ib():
    v1 = DepthwiseSeparable(32, 64, pw_act=True, skip=False, act="relu6")
    assert isinstance(v1.pw.act, nn.ReLU6) and not v1.has_skip
    fib = FusedIB(32, 48, 128, 3, stride=2)
    assert fib.expand.conv.kernel_size == (3, 3) and fib.expand.conv.stride == (2, 2)
    assert fib(torch.randn(1, 32, 10, 10)).shape == (1, 48, 5, 5)


def test_conv_norm_act_bias_only_without_norm():
    assert ConvNormAct(3, 8, 3).conv.bias is None
    assert ConvNormAct(3, 8, 3, norm=None).conv.bias is not None


def test_squeeze_excite_hard_sigmoid_gate():
    se = SqueezeExcite(8, 8)
    with torch.no_grad():
        for p in se.parameters():
            p.zero_()
    x = torch.randn(1, 8, 4, 4)
    torch.testing.assert_close(se(x), x * 0.5)  # h-sigmoid(0) = 0.5


def test_layer_scale_and_drop_path():
    ls = LayerScale(4, 0.5)
    torch.testing.assert_close(ls(torch.ones(1, 4, 2, 2)), torch.full((1, 4, 2, 2), 0.5))
    dp = DropPath(0.5).train()
    torch.manual_seed(0)
    y = dp(torch.ones(4000, 1, 1, 1))
    assert set(y.unique().tolist()) == {0.0, 2.0}
    assert abs(float(y.mean()) - 1.0) < 0.08  # unbiased in expectation
    assert torch.equal(dp.eval()(torch.ones(3, 2)), torch.ones(3, 2))
    with pytest.raises(ValueError, match="drop path rate"):
        DropPath(1.0)


def test_blur_and_avg_anti_aliasing():
    blur = BlurPool2d(2, pad_mode="constant")
    assert blur.filt.shape == (2, 1, 3, 3)
    torch.testing.assert_close(blur.filt[0, 0], torch.tensor([[1., 2, 1], [2, 4, 2], [1, 2, 1]]) / 16)
    x = torch.ones(1, 2, 8, 8)
    y = blur(x)
    assert y.shape == (1, 2, 4, 4) and torch.allclose(y[..., 1:, 1:], torch.ones(1, 2, 3, 3))
    assert isinstance(create_aa("avg", 4), nn.AvgPool2d)
    conv = ConvNormAct(4, 8, 3, stride=2, aa="blurpc")
    assert conv.conv.stride == (1, 1) and conv(torch.randn(1, 4, 8, 8)).shape == (1, 8, 4, 4)
    with pytest.raises(ValueError, match="anti-aliasing"):
        create_aa("median", 4)


def test_activation_names():
    assert isinstance(get_act("h-swish"), nn.Hardswish)
    assert isinstance(get_act("relu6"), nn.ReLU6)
    assert isinstance(get_act(None), nn.Identity)
    assert get_act("gelu_tanh").approximate == "tanh"
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        get_act("swishy")
