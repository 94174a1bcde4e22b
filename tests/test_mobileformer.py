"""Mobile-Former (issue 3): specs, blocks, bridges, the model contract, MAdds and the official
checkpoint layout.

The registry-wide contract (tests/test_models.py) runs on every Mobile-Former variant too;
this file adds what is specific to it. Parity with the official code (AAboys/MobileFormer) is
checked against a clone outside the repository (benchmarks/verify_mobileformer_official.py;
``test_official_code_parity`` runs it when ``MOBILEFORMER_OFFICIAL_DIR`` is set); otherwise the
official *key layout* is exercised through :func:`export_mobileformer_official`, whose pairs the
loader runs backwards.
"""

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mobilenets
from mobilenets.analysis import profile
from mobilenets import CheckpointError, count_params, create_model, load_weights, save_weights
from mobilenets.archs.mobileformer import SPECS, MobileFormerRow, MobileFormerSpec, block, down, lite
from mobilenets.blocks import (ChannelShuffle, DynamicReLU, Former, FormerToMobile, LiteBottleneck,
                               MobileDownsample, MobileFormerBlock, MobileToFormer)
from mobilenets.weights import detect_layout, export_mobileformer_official, find_matching_models
from mobilenets.weights.convert import LAYOUTS
from conftest import assert_same_function, randomize_bn

NAMES = ["mobileformer_26m", "mobileformer_52m", "mobileformer_96m", "mobileformer_151m",
         "mobileformer_214m", "mobileformer_294m", "mobileformer_508m"]

# Exact training-state counts; identical to the official code's models (checked on a copy).
PARAMS = {"mobileformer_26m": 3_232_788, "mobileformer_52m": 3_469_092,
          "mobileformer_96m": 4_585_252, "mobileformer_151m": 7_595_828,
          "mobileformer_214m": 9_425_920, "mobileformer_294m": 11_422_648,
          "mobileformer_508m": 13_976_976}
REFERENCE_M = {"mobileformer_26m": 3.233, "mobileformer_52m": 3.469, "mobileformer_96m": 4.585,
               "mobileformer_151m": 7.596, "mobileformer_214m": 9.426, "mobileformer_294m": 11.423,
               "mobileformer_508m": 13.977}

# Multiply-adds at 224 x 224 = FlopCounterMode FLOPs / 2 (convolutions, linears, attention
# matmuls; the element-wise dynamic ReLU, gates, norms and softmax are not counted), against
# the paper's Table (26, 52, ... 508 M). All within 10% (26M: -9.4%, 508M: -1.9%).
MADDS = {"mobileformer_26m": 23_550_208, "mobileformer_52m": 49_290_496,
         "mobileformer_96m": 92_017_040, "mobileformer_151m": 146_249_168,
         "mobileformer_214m": 208_374_240, "mobileformer_294m": 286_732_160,
         "mobileformer_508m": 498_467_680}
PAPER_MADDS = {"mobileformer_26m": 26e6, "mobileformer_52m": 52e6, "mobileformer_96m": 96e6,
               "mobileformer_151m": 151e6, "mobileformer_214m": 214e6, "mobileformer_294m": 294e6,
               "mobileformer_508m": 508e6}


def _seeded(name, **kw):
    torch.manual_seed(0)
    return randomize_bn(create_model(name, **kw)).eval()


def test_all_seven_registered_in_their_family():
    assert mobilenets.list_models(family="mobileformer") == sorted(NAMES)
    for name in NAMES:
        entry = mobilenets.get_entry(name)
        assert entry.reference == {"official": name.replace("mobileformer_", "mobile_former_")}
        assert isinstance(entry.spec, MobileFormerSpec) and entry.spec.name == name


# --- specs (the official code's variants, paper Table 1) -----------------------------------------------------------
@pytest.mark.parametrize("name,stem,tokens,head", [
    ("mobileformer_26m", 8, (3, 128), (576, 1024)), ("mobileformer_52m", 8, (3, 128), (576, 1024)),
    ("mobileformer_96m", 12, (4, 128), (768, 1280)), ("mobileformer_151m", 12, (6, 192), (768, 1280)),
    ("mobileformer_214m", 12, (6, 192), (960, 1600)), ("mobileformer_294m", 16, (6, 192), (1152, 1920)),
    ("mobileformer_508m", 24, (6, 192), (1440, 1920))])
def test_spec_table(name, stem, tokens, head):
    s = SPECS[name]
    last = s.rows()[-1].out
    assert (s.stem, (s.num_tokens, s.token_dim), (last * s.head_expand, s.head_hidden)) == (stem, tokens, head)
    assert s.groups == (4 if name == "mobileformer_26m" else 1)


def _row_string(r: MobileFormerRow) -> str:
    if r.kind == "lite":
        return f"lite x{int(r.expand)} s{r.stride} {r.out}"
    return f"v{r.out}" if r.kind == "down" else f"[{r.out}:{r.expand:g}]"


def test_spec_rows_match_reference_table():
    rows = {n: " ".join(_row_string(r) for r in SPECS[n].rows()) for n in NAMES}
    assert rows["mobileformer_52m"] == "lite x3 s2 12 [12:3] v24 [24:3] v48 [48:4] [64:6] v96 [96:6]"
    assert rows["mobileformer_26m"] == rows["mobileformer_52m"]
    assert rows["mobileformer_96m"] == "lite x2 s1 12 v16 v32 [32:3] v64 [64:4] [88:6] v128 [128:6]"
    assert rows["mobileformer_151m"] == ("lite x2 s1 12 v16 [16:3] v32 [32:3] v64 [64:4] [88:6] [88:6] "
                                         "v128 [128:6] [128:6]")
    assert rows["mobileformer_214m"] == ("lite x2 s1 12 v20 [20:3] v40 [40:4] v80 [80:4] [112:6] [112:6] "
                                         "v160 [160:6] [160:6]")
    assert rows["mobileformer_294m"] == ("lite x2 s1 16 v24 [24:4] v48 [48:4] v96 [96:4] [128:6] [128:6] "
                                         "v192 [192:6] [192:6]")
    assert rows["mobileformer_508m"] == ("lite x2 s1 24 v40 [40:3] v72 [72:3] v128 [128:4] [176:6] [176:6] "
                                         "v240 [240:6] [240:6]")
    assert all((r.expand, r.expand2) == (6, 4) for s in SPECS.values() for r in s.rows() if r.kind == "down")


def test_spec_validation():
    with pytest.raises(ValueError, match="unknown Mobile-Former row kind"):
        MobileFormerRow("conv", 8)
    with pytest.raises(ValueError, match="down row has stride 2"):
        MobileFormerRow("down", 8, 1, 6, 4)
    with pytest.raises(ValueError, match="exactly one lite row"):
        MobileFormerSpec("x", 8, ((down(16),),), 3, 32, 64)
    with pytest.raises(ValueError, match="must start with a stride-2 row"):
        MobileFormerSpec("x", 8, ((lite(2, 1, 8),), (block(3, 16),)), 3, 32, 64)


# --- parameters and MAdds ---------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_param_count_pinned(name):
    n = count_params(create_model(name))
    assert n == PARAMS[name]
    assert round(n / 1e6, 3) == REFERENCE_M[name]


@pytest.mark.parametrize("name", NAMES)
def test_madds_pinned_and_within_10_percent_of_paper(name):
    model = create_model(name).eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    madds = fc.get_total_flops() // 2
    assert madds == MADDS[name]
    assert abs(madds / PAPER_MADDS[name] - 1) < 0.10
    # the analysis counter (mobilenets.analysis.profile) gives the same total
    assert profile(model, input_size=(224, 224)).macs == MADDS[name]


# --- blocks -------------------------------------------------------------------------------------
def test_channel_shuffle():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert ChannelShuffle(2)(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert ChannelShuffle(3)(x).flatten().tolist() == [0, 2, 4, 1, 3, 5]
    with pytest.raises(ValueError, match="do not split into 4 groups"):
        ChannelShuffle(4)(x)


def test_dynamic_relu():
    torch.manual_seed(0)
    act = DynamicReLU(8, 16)
    assert act.fc1.out_features == 4 and act.fc2.out_features == 16  # d -> d/4 -> 2C
    for p in act.parameters():
        torch.nn.init.normal_(p, 0, 1.0)
    x, tokens = torch.randn(2, 8, 5, 3), torch.randn(2, 3, 16, requires_grad=True)
    y = act(x, tokens)
    assert y.shape == x.shape
    a1, a2 = act.coefficients(tokens)
    assert a1.shape == a2.shape == (2, 8, 1, 1)
    assert 0 <= a1.min() and a1.max() <= 2 and -1 <= a2.min() and a2.max() <= 1
    h = torch.nn.functional.hardsigmoid(act.fc2(torch.relu(act.fc1(tokens[:, 0]))))
    torch.testing.assert_close(a1.flatten(1), 2 * h[:, :8])
    torch.testing.assert_close(a2.flatten(1), 2 * h[:, 8:] - 1)
    torch.testing.assert_close(y, torch.maximum(a1 * x, a2 * x))
    # driven by the first token only
    other = tokens.detach().clone()
    other[:, 1:] = torch.randn(2, 2, 16)
    torch.testing.assert_close(act(x, other), y)
    y.sum().backward()
    assert tokens.grad[:, 0].abs().sum() > 0 and tokens.grad[:, 1:].abs().sum() == 0


def _randomize_linears(m: torch.nn.Module) -> torch.nn.Module:
    for lin in m.modules():
        if isinstance(lin, torch.nn.Linear):
            lin.reset_parameters()
    return m


def test_mobile_to_former_attends_over_positions():
    torch.manual_seed(0)
    bridge = _randomize_linears(MobileToFormer(8, 16, heads=2))
    x, tokens = torch.randn(2, 8, 5, 7), torch.randn(2, 3, 16)
    attn = bridge.attention(x, tokens)
    assert attn.shape == (2, 2, 3, 35)  # (N, heads, M, HW)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 2, 3))
    # by hand: keys = values = the raw map, per head of 4 channels, gate 2 * hsig, proj, post-norm
    f = x.flatten(2)  # (N, C, HW)
    q = bridge.q(tokens)
    heads = []
    for h in range(2):
        fh = f[:, 4 * h:4 * h + 4]
        a = (q[..., 4 * h:4 * h + 4] @ fh / 2.0).softmax(-1)  # scale (C / heads) ** -0.5 = 1/2
        torch.testing.assert_close(a, attn[:, h])
        heads.append(a @ fh.transpose(1, 2))
    upd = torch.cat(heads, -1) * 2 * torch.nn.functional.hardsigmoid(bridge.gate(tokens))
    ref = torch.nn.functional.layer_norm(tokens + bridge.proj(upd), (16,), bridge.norm.weight, bridge.norm.bias)
    torch.testing.assert_close(bridge(x, tokens), ref)


def test_former_attends_over_tokens():
    torch.manual_seed(0)
    former = _randomize_linears(Former(16, heads=4))
    tokens = torch.randn(2, 6, 16)
    attn = former.attention(tokens)
    assert attn.shape == (2, 4, 6, 6)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 4, 6))
    # by hand: only the query is projected; keys and values are the tokens themselves
    q, heads = former.q(tokens), []
    for h in range(4):
        th = tokens[..., 4 * h:4 * h + 4]
        a = (q[..., 4 * h:4 * h + 4] @ th.transpose(1, 2) / 2.0).softmax(-1)
        heads.append(a @ th)
    t = former.norm1(tokens + former.proj(torch.cat(heads, -1)))
    ref = former.norm2(t + former.fc2(torch.nn.functional.gelu(former.fc1(t))))
    torch.testing.assert_close(former(tokens), ref)
    assert former.fc1.out_features == 32  # FFN expansion 2


def test_former_to_mobile_attends_over_tokens():
    torch.manual_seed(0)
    bridge = _randomize_linears(FormerToMobile(8, 16, heads=2))
    x, tokens = torch.randn(2, 8, 5, 7), torch.randn(2, 3, 16)
    attn = bridge.attention(x, tokens)
    assert attn.shape == (2, 2, 35, 3)  # (N, heads, HW, M)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 2, 35))
    f, k, v = x.flatten(2), bridge.k(tokens), bridge.v(tokens)
    heads = []
    for h in range(2):
        a = (f[:, 4 * h:4 * h + 4].transpose(1, 2) @ k[..., 4 * h:4 * h + 4].transpose(1, 2) / 2.0).softmax(-1)
        torch.testing.assert_close(a, attn[:, h])
        heads.append((a @ v[..., 4 * h:4 * h + 4]).transpose(1, 2))  # (N, C/h, HW)
    torch.testing.assert_close(bridge(x, tokens), x + torch.cat(heads, 1).view_as(x))


def test_bridge_heads_must_divide_channels():
    with pytest.raises(ValueError, match="13 channels do not split into 2 heads"):
        MobileToFormer(13, 16)
    with pytest.raises(ValueError, match="Former: 18 channels do not split into 4 heads"):
        Former(18)


def test_downsample_and_lite_blocks():
    torch.manual_seed(0)
    down_blk = MobileDownsample(8, 16, token_dim=32).eval()
    assert down_blk.dw1.conv.out_channels == 48 and down_blk.dw2.conv.out_channels == 64
    x, tokens = torch.randn(2, 8, 9, 12), torch.randn(2, 3, 32)
    with torch.no_grad():
        assert down_blk(x, tokens).shape == (2, 16, 5, 6)
        # with the second projection silenced the inner shortcut passes the first one through
        down_blk.pw2.bn.weight.zero_()
        down_blk.pw2.bn.bias.zero_()
        first = down_blk.pw1(down_blk.act1(down_blk.dw1(x), tokens))
        torch.testing.assert_close(down_blk(x, tokens), first)
    lite_blk = LiteBottleneck(12, 12, expand=2)
    assert lite_blk.has_skip and not LiteBottleneck(8, 12, 3, stride=2).has_skip
    assert lite_blk.dw.conv.groups == 12 and lite_blk.dw.conv.out_channels == 24


def test_block_order_and_grouped_convs_of_26m():
    model = create_model("mobileformer_26m")
    blk = model.stages[0][1]
    assert isinstance(blk, MobileFormerBlock) and blk.has_skip
    assert [n for n, _ in blk.named_children()] == ["to_former", "former", "mobile", "to_mobile", "drop_path"]
    assert blk.mobile.expand.conv.groups == 4 and isinstance(blk.mobile.shuffle1, ChannelShuffle)
    assert model.head.expand.conv.groups == 4 and model.head.shuffle.groups == 4
    assert model.stages[1][0].mobile.shuffle1.groups == 12  # shuffle over the dw's input channels
    plain = create_model("mobileformer_52m")
    assert plain.stages[0][1].mobile.expand.conv.groups == 1
    assert isinstance(plain.stages[0][1].mobile.shuffle1, torch.nn.Identity)


# --- the model contract -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def mf96():
    return _seeded("mobileformer_96m")


def test_forward_features_tokens_and_head(mf96):
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        fmap, tokens = mf96.forward_features(x, return_tokens=True)
        assert fmap.shape == (2, 128, 2, 3) and tokens.shape == (2, 4, 128)
        logits = mf96(x)
        torch.testing.assert_close(mf96.forward_head((fmap, tokens)), logits)
        torch.testing.assert_close(mf96.forward_head(mf96.forward_features(x)), logits)
        assert mf96.forward_head((fmap, tokens), pre_logits=True).shape == (2, 1280)
        # the tokens are those after the final Mobile->Former
        seen = {}
        h = mf96.to_former.register_forward_hook(lambda m, i, o: seen.setdefault("t", o))
        mf96.forward_features(x)
        h.remove()
        torch.testing.assert_close(seen["t"], tokens)
        with pytest.raises(ValueError, match="needs the tokens"):
            mf96.forward_head(fmap.clone())


def test_any_input_size(mf96):
    with torch.no_grad():
        for size in [(32, 32), (33, 47), (160, 128), (224, 224)]:
            assert mf96(torch.randn(1, 3, *size)).shape == (1, 1000)


def test_bad_input_raises(mf96):
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, H, W\) with H, W >= 32, got \(1, 4, 64, 64\)"):
        mf96(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match=r"got \(1, 3, 31, 64\)"):
        mf96(torch.randn(1, 3, 31, 64))
    with pytest.raises(ValueError, match="expected input of shape"):
        create_model("mobileformer_26m", features_only=True)(torch.randn(1, 1, 64, 64))


def test_gradients_reach_the_token_table():
    model = create_model("mobileformer_26m", num_classes=5).train()
    model(torch.randn(2, 3, 64, 64)).square().mean().backward()
    assert model.tokens.grad is not None and model.tokens.grad.abs().sum() > 0
    assert model.tokens.grad.shape == (3, 128)


def test_feature_info_and_features_only():
    model = create_model("mobileformer_26m")
    assert [(f["module"], f["num_chs"], f["reduction"]) for f in model.feature_info] == [
        ("stem", 8, 2), ("stages.0", 12, 4), ("stages.1", 24, 8), ("stages.2", 64, 16), ("stages.3", 96, 32)]
    assert [f["reduction"] for f in create_model("mobileformer_508m").feature_info] == [2, 4, 8, 16, 32]
    feats = create_model("mobileformer_151m", features_only=True, out_indices=(1, 3))
    assert feats.width_list == [16, 88] and [f["reduction"] for f in feats.feature_info] == [4, 16]
    assert len(feats.model.stages) == 4 and feats.model.head is None and feats.model.to_former is None
    with torch.no_grad():
        maps = feats(torch.randn(1, 3, 96, 64))
    assert [tuple(m.shape) for m in maps] == [(1, 16, 24, 16), (1, 88, 6, 4)]
    stem = create_model("mobileformer_26m", features_only=True, out_indices=(0,))
    assert len(stem.model.stages) == 0
    with torch.no_grad():
        assert stem(torch.randn(1, 3, 64, 64))[0].shape == (1, 8, 32, 32)


def test_options():
    model = create_model("mobileformer_52m", num_classes=0, in_chans=1, drop_rate=0.3, drop_path_rate=0.2)
    assert model.head.drop.p == 0.3 and model.num_features == 96 and model.head_hidden_size == 1024
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 64, 64)).shape == (2, 1024)
    blocks = [b for st in model.stages for b in st]
    rates = [b.drop_path.p for b in blocks[1:]]  # official schedule: rate * (row + 1) / rows
    assert rates == pytest.approx([0.2 * (i + 1) / 9 for i in range(1, 9)])
    assert model.to_former.drop_path.p == 0.2
    model.reset_classifier(7)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 7)
    model.set_bn(eps=1e-3, momentum=0.01)
    assert model.stem.bn.eps == 1e-3 and model.head.norm.momentum == 0.01
    # width_mult follows the official rounding (multiples of 4; 8 above 1.01)
    half = create_model("mobileformer_294m", width_mult=0.5)
    assert [f["num_chs"] for f in half.feature_info] == [8, 12, 24, 64, 96]
    wide = create_model("mobileformer_294m", width_mult=1.5)
    assert [f["num_chs"] for f in wide.feature_info] == [24, 40, 72, 192, 288]
    with torch.no_grad():
        assert half.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    for kwargs, match in [({"width_mult": 0}, "width_mult"), ({"drop_path_rate": 1.0}, "drop_path_rate"),
                          ({"in_chans": 0}, "in_chans")]:
        with pytest.raises(ValueError, match=match):
            create_model("mobileformer_26m", **kwargs)


@pytest.mark.parametrize("name", ["mobileformer_26m", "mobileformer_294m"])
def test_output_stride_dilates_the_later_blocks(name):
    """output_stride 16 / 8 (segmentation): the downsampling blocks past it run at stride 1,
    their depthwise convs and every later one's dilated (the MobileNets' rule), with the same
    weights as the classification model (its checkpoints load strictly) and no shortcut where
    the row itself downsamples."""
    ref = create_model(name)
    x = torch.randn(1, 3, 96, 128)
    for os_, dil in ((16, [2]), (8, [2, 4])):
        m = create_model(name, output_stride=os_).eval()
        m.load_state_dict(ref.state_dict())  # identical keys and shapes
        assert m.output_stride == os_
        assert [f["reduction"] for f in m.feature_info] == [r for r in (2, 4, 8, 16, 32) if r <= os_]
        with torch.no_grad():
            fmap, tokens = m.forward_features(x)
        assert fmap.shape[-2:] == (96 // os_, 128 // os_) and tokens.shape[1:] == ref.tokens.shape
        blocks = [b for st in m.stages for b in st if isinstance(b, MobileFormerBlock)]
        downs = [b for b in blocks if isinstance(b.mobile, MobileDownsample)]
        dilated = [b for b in downs if b.mobile.dw1.conv.dilation != (1, 1)]
        assert [b.mobile.dw1.conv.dilation[0] for b in dilated] == dil
        assert all(b.stride == 1 and b.mobile.dw1.conv.stride == (1, 1) and not b.has_skip for b in dilated)
        after = blocks[blocks.index(dilated[0]):]  # every later depthwise conv is dilated too
        assert all(mod.dilation[0] >= 2 for b in after for mod in b.modules()
                   if isinstance(mod, torch.nn.Conv2d) and mod.kernel_size == (3, 3))
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32"):
        create_model(name, output_stride=4)


def test_stage_shapes_for_info():
    shapes = mobilenets.stage_shapes(create_model("mobileformer_96m"), (224, 160))
    assert shapes[0] == ("stem", (1, 12, 112, 80)) and shapes[-1] == ("stages.4", (1, 128, 7, 5))


def test_fuse_folds_every_batchnorm():
    model = _seeded("mobileformer_26m")
    assert assert_same_function(model, lambda m: m.fuse(), torch.randn(2, 3, 96, 80)) is model
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_torch_export():
    model = _seeded("mobileformer_26m")
    x = torch.randn(1, 3, 64, 96)
    ep = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), model(x))


# --- weights: the official layout ---------------------------------------------------------------
def _same_logits(a, b, size=(96, 128)):
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


def test_official_layout_keys():
    sd = export_mobileformer_official(create_model("mobileformer_26m"))
    assert len(sd) == 460
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["tokens.weight"] == (3, 128) and shapes["stem.0.weight"] == (8, 3, 3, 3)
    assert shapes["features.0.conv.0.weight"] == (24, 1, 3, 3)        # lite: dw x3
    assert shapes["features.0.conv.4.weight"] == (12, 6, 1, 1)        # grouped pw (4 groups)
    assert shapes["features.1.hyper1.hyper.2.weight"] == (72, 32)     # dynamic ReLU: d/4 -> 2C
    assert shapes["features.1.local_global.alpha.0.weight"] == (12, 128)
    assert shapes["features.1.global_block.ffn.0.weight"] == (256, 128)
    assert shapes["features.1.global_local.proj.weight"] == (12, 128)  # the value projection
    assert shapes["features.2.conv4.0.weight"] == (24, 24, 1, 1)       # down: 96 -> 24 in 4 groups
    assert shapes["features.2.hyper3.hyper.2.weight"] == (192, 32)
    assert shapes["local_global.q.weight"] == (96, 128)
    assert shapes["classifier.conv.1.weight"] == (576, 24, 1, 1)
    assert shapes["classifier.fc.0.weight"] == (1024, 576 + 128)
    assert shapes["classifier.classifier.1.weight"] == (1000, 1024)
    assert "classifier.fc.1.running_var" in sd


@pytest.mark.parametrize("name", ["mobileformer_26m", "mobileformer_96m"])
def test_official_layout_loads_with_identical_logits(name, tmp_path):
    ref = _seeded(name)
    official = export_mobileformer_official(ref)
    assert detect_layout(official) == "mobileformer_official"
    ours = create_model(name)
    ours.set_bn(eps=1e-3, momentum=0.01)  # loading restores the official (PyTorch-default) settings
    report = load_weights(ours, official)
    assert report.layout == "mobileformer_official" and report.loaded == len(official)
    assert ours.stem.bn.eps == 1e-5 and ours.head.norm.momentum == 0.1
    _same_logits(ref, ours)
    # as training scripts save it: wrapped, in a file, with a DataParallel prefix
    path = tmp_path / "official.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in official.items()}, "epoch": 450}, path)
    _same_logits(ref, create_model(name, pretrained=path))
    # and wrapped in memory
    _same_logits(ref, create_model(name, pretrained={"model": official, "optimizer": {"lr": torch.tensor(0.1)}}))


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


def test_official_checkpoint_as_timm_train_saves_it(tmp_path):
    """The official weights were trained with timm's train.py, whose checkpoints are
    ``*.pth.tar`` holding ``state_dict`` (+ ``state_dict_ema``, ``optimizer``) and the
    command line as an ``argparse.Namespace``."""
    import argparse
    ref = _seeded("mobileformer_26m")
    official = export_mobileformer_official(ref)
    path = tmp_path / "model_best.pth.tar"
    args = argparse.Namespace(model="mobile-former-26m", lr=1e-3, drop=0.3, img_size=None, mean=[0.485])
    torch.save({"epoch": 449, "arch": "mobile_former_26m", "state_dict": official, "version": 2,
                "state_dict_ema": official, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
                "args": args, "metric": 64.0}, path)
    _same_logits(ref, create_model("mobileformer_26m", pretrained=path))
    # the Namespace is the only extra class allowed: anything inside it is still refused
    torch.save({"state_dict": official, "args": argparse.Namespace(x=_Evil())}, path)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        create_model("mobileformer_26m", pretrained=path)


def test_official_layout_non_strict_fine_tuning():
    official = export_mobileformer_official(_seeded("mobileformer_52m"))
    model = create_model("mobileformer_52m", num_classes=10, pretrained=official, strict=False)
    torch.testing.assert_close(model.tokens, official["tokens.weight"])
    report = load_weights(model, official, strict=False)
    assert sorted(k.split(":")[0] for k in report.mismatched) == ["head.fc.bias", "head.fc.weight"]


@pytest.mark.parametrize("ckpt,target", [
    ("mobileformer_52m", "mobileformer_26m"),   # same keys, grouped vs dense 1x1 shapes
    ("mobileformer_26m", "mobileformer_96m"),   # same block count, other widths and tokens
    ("mobileformer_151m", "mobileformer_96m"),  # more blocks
])
def test_wrong_variant_names_the_variant(ckpt, target):
    official = export_mobileformer_official(create_model(ckpt))
    with pytest.raises(CheckpointError) as e:
        create_model(target, pretrained=official)
    msg = str(e.value)
    assert f"does not fit {target}" in msg and f"appears to be a checkpoint for {ckpt}" in msg


def test_wrong_variant_hint_is_generic(tmp_path):
    # our own layout, and another family: the same helper names the variant
    path = save_weights(create_model("mobileformer_214m"), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="appears to be a checkpoint for mobileformer_214m"):
        create_model("mobileformer_294m", pretrained=path)
    with pytest.raises(CheckpointError, match="appears to be a checkpoint for mobilenetv3_small_050"):
        create_model("mobilenetv3_small_100", pretrained=create_model("mobilenetv3_small_050").state_dict())
    assert find_matching_models(create_model("mobilenetv2_050").state_dict(), "mobileformer") == []


def test_layout_detectors_exclude_each_other():
    samples = {
        "mobilenets": [create_model("mobileformer_26m").state_dict(), create_model("mobilenetv2_050").state_dict()],
        "mobileformer_official": [export_mobileformer_official(create_model("mobileformer_26m"))],
    }
    import torchvision
    samples["torchvision"] = [torchvision.models.mobilenet_v3_small().state_dict()]
    timm = pytest.importorskip("timm")
    samples["timm"] = [timm.create_model("mobilenetv3_small_050").state_dict()]
    for layout, sds in samples.items():
        for sd in sds:
            hits = [name for name, (detect, _, _) in LAYOUTS.items() if detect(set(sd))]
            assert hits == [layout]


# --- parity with the official code (AAboys/MobileFormer), when a clone is at hand -----------
OFFICIAL_ENV = "MOBILEFORMER_OFFICIAL_DIR"
VERIFY_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "verify_mobileformer_official.py"


def _official_dir_or_skip() -> str:
    where = os.environ.get(OFFICIAL_ENV)
    if not where:
        pytest.skip(f"official-code parity needs ${OFFICIAL_ENV}: a clone of "
                    "https://github.com/AAboys/MobileFormer (mobile_former.py, dna_blocks.py)")
    missing = [f for f in ("mobile_former.py", "dna_blocks.py") if not (Path(where) / f).is_file()]
    if missing:
        pytest.skip(f"${OFFICIAL_ENV}={where} has no {', '.join(missing)}")
    pytest.importorskip("timm", reason="the official mobile_former.py imports timm.data")
    return where


def test_official_code_parity():
    """benchmarks/verify_mobileformer_official.py against the user's clone: same parameter
    counts, float32 logits within 1e-4 (224 and 193x161, both directions of the key mapping),
    float64 eval and train-mode logits within 1e-9."""
    official_dir = _official_dir_or_skip()
    spec = importlib.util.spec_from_file_location("verify_mobileformer_official", VERIFY_SCRIPT)
    verify = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(verify)
    rows = verify.run(official_dir, ["mobileformer_26m", "mobileformer_96m"], train=True)
    table = verify.format_table(rows)
    for row in rows:
        assert row["error"] is None, table
        assert row["params_ours"] == row["params_official"] == PARAMS[row["variant"]], table
        assert row["ok"], table


def test_torch_compile_inductor():
    """torch.compile (inductor, CPU) compiles Mobile-Former: the Mobile<-Former bridge keeps the
    map channel-major (an earlier token-major form made inductor fail: 'Attempting to
    broadcast a dimension of length 3')."""
    torch.manual_seed(0)
    model = create_model("mobileformer_26m").eval()
    x = torch.randn(1, 3, 64, 64)
    torch._dynamo.reset()
    # Inductor picks its C++ vector width from the CPU, not from ATEN_CPU_CAPABILITY; capped to
    # the baseline, ATen's headers lack at::vec and its generated code does not compile. There,
    # ask inductor for scalar code (what the cap means for every other kernel too).
    import torch._inductor.config as inductor_config
    scalar = os.environ.get("ATEN_CPU_CAPABILITY", "").lower() == "default"
    with torch.no_grad(), inductor_config.patch({"cpp.simdlen": 1} if scalar else {}):
        y = torch.compile(model, dynamic=False)(x)
        ref = model(x)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
