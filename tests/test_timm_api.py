"""timm's model API on our models: the create_model keywords (device, dtype, global_pool,
feature_cls, checkpoint_path, bn_momentum / bn_eps, the layer-config flags), reset_classifier
with pooling (device, dtype and mode kept), FeatureInfo, pruning that leaves a working model,
grad checkpointing, group_matcher / no_weight_decay with timm's optimizer helpers, and
torch.jit.script (eager and FX-traced). timm's own test file runs on our models in
test_timm_suite.py; these are the pieces, checked against timm where it has the same model."""

import copy

import pytest
import torch

import mobilenets
from mobilenets.layers.pool import UnsupportedPoolError

FAMILIES = ["mobilenetv1_100", "mobilenetv2_035", "mobilenetv3_small_050", "mobilenetv4_conv_small",
            "mobilenetv4_hybrid_medium", "mobileformer_26m", "tf_mobilenetv3_small_minimal_100",
            "mobilenet_edgetpu_v2_xs"]
SCRIPTABLE = [n for n in FAMILIES if not n.startswith("mobileformer")]


def _x(n=2, size=64):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_device_dtype_keywords_place_every_tensor():
    m = mobilenets.create_model("mobilenetv4_hybrid_medium", device="meta", dtype=torch.float64)
    tensors = [*m.parameters(), *m.buffers()]
    assert all(t.device.type == "meta" for t in tensors)
    assert all(t.dtype == torch.float64 for t in tensors if t.is_floating_point())
    m = mobilenets.create_model("mobilenetv2_035", dtype=torch.float64).eval()
    assert m(_x().double()).dtype == torch.float64
    with pytest.raises(TypeError, match="dtype must be a floating torch.dtype"):
        mobilenets.create_model("mobilenetv2_035", dtype=torch.int8)
    with pytest.raises(TypeError, match="not_a_model_arg"):  # unknown keywords still refused
        mobilenets.create_model("mobilenetv2_035", device="meta", not_a_model_arg=1)
    with pytest.raises(TypeError, match="scriptable must be True, False or None"):
        mobilenets.create_model("mobilenetv2_035", scriptable="yes")
    for flag in ("scriptable", "exportable", "no_jit"):
        mobilenets.create_model("mobilenetv2_035", **{flag: True})


def test_bn_args_checkpoint_path_and_feature_cls(tmp_path):
    m = mobilenets.create_model("mobilenetv3_small_050", bn_momentum=0.01, bn_eps=1e-3)
    bns = [b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
    assert all(b.momentum == 0.01 and b.eps == 1e-3 for b in bns)
    ref = mobilenets.create_model("mobilenetv2_035", num_classes=7).eval()
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    m = mobilenets.create_model("mobilenetv2_035", num_classes=7, checkpoint_path=tmp_path / "w.pth").eval()
    with torch.no_grad():
        torch.testing.assert_close(m(_x()), ref(_x()))
    d = mobilenets.create_model("mobilenetv2_035", features_only=True, feature_cls="dict", out_indices=(1, 3))
    lst = mobilenets.create_model("mobilenetv2_035", features_only=True, feature_cls="getter", out_indices=(1, 3))
    lst.load_state_dict(d.state_dict())
    with torch.no_grad():
        out = d(_x())
        assert list(out) == d.feature_info.module_name()
        for a, b in zip(out.values(), lst(_x())):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="feature_cls must be one of list, getter, hook, fx, dict"):
        mobilenets.create_model("mobilenetv2_035", features_only=True, feature_cls="graph")
    with pytest.raises(ValueError, match="feature_cls is only used with features_only=True"):
        mobilenets.create_model("mobilenetv2_035", feature_cls="dict")


def test_feature_info_has_timms_methods():
    timm = pytest.importorskip("timm")
    ours = mobilenets.create_model("mobilenetv3_large_100", features_only=True, out_indices=(1, 2, 4))
    ref = timm.create_model("mobilenetv3_large_100", features_only=True, out_indices=(1, 2, 4))
    fi, rfi = ours.feature_info, ref.feature_info
    assert fi.channels() == rfi.channels() and fi.reduction() == rfi.reduction()
    assert fi.out_indices == tuple(rfi.out_indices) == (1, 2, 4)
    assert fi.channels(0) == rfi.channels(0) and fi.reduction([0, 3]) == rfi.reduction([0, 3])
    assert fi.get_dicts(keys=["num_chs", "reduction"]) == rfi.get_dicts(keys=["num_chs", "reduction"])
    assert fi.from_other((0, 4)).channels() == rfi.from_other((0, 4)).channels()
    # and still the list of the selected levels this library's feature_info always was
    assert len(fi) == 3 and [f["reduction"] for f in fi] == [4, 8, 32] and ours.width_list == fi.channels()


@pytest.mark.parametrize("name", FAMILIES)
def test_global_pool_and_reset_classifier(name):
    """Every pool type at creation; reset_classifier keeps device, dtype and train / eval mode,
    keeps the pooling by default, and refuses a pooling that changes a hidden layer's width
    (ValueError, and AssertionError as timm raises)."""
    x = _x()
    m = mobilenets.create_model(name).eval()
    with torch.no_grad():
        feats = m.forward_features(x)
        fmap = feats[0] if isinstance(feats, tuple) else feats
        for pool in ("avg", "max", "avgmax"):
            p = mobilenets.create_model(name, global_pool=pool).eval()
            p.load_state_dict(m.state_dict())
            assert p(x).shape == (2, 1000)
        nopool = mobilenets.create_model(name, global_pool="", num_classes=0).eval()
        nopool.load_state_dict(m.state_dict(), strict=False)
        out = nopool(x)
        assert out.ndim == 4 and out.shape[-2:] == fmap.shape[-2:]
    hidden = m.head.hidden_size != m.num_features  # V1 / V2 / EdgeTPU pool straight into the classifier
    if hidden:  # V3 / V4 / Mobile-Former heads have a hidden layer sized for one pooled vector
        with pytest.raises(UnsupportedPoolError):
            m.reset_classifier(5, "catavgmax")
        with pytest.raises(AssertionError):
            m.reset_classifier(5, "catavgmax")
    else:
        m.reset_classifier(5, "catavgmax")
        assert m.head_hidden_size == 2 * m.num_features and m(x).shape == (2, 5)
    m = mobilenets.create_model(name, global_pool="max").to(torch.float64).train()
    m.reset_classifier(3)
    fc = m.get_classifier()
    assert fc.weight.dtype == torch.float64 and all(mod.training for mod in m.modules())
    m.eval()
    with torch.no_grad():
        pre = m.forward_head(m.forward_features(x.double()), pre_logits=True)
        m.reset_classifier(0)  # the pooling stays max
        torch.testing.assert_close(m(x.double()), pre)
        assert m.num_classes == 0 and pre.shape[1] == m.head_hidden_size
    with pytest.raises(ValueError, match="global_pool must be one of"):
        m.reset_classifier(3, "mean")


@pytest.mark.parametrize("name", FAMILIES)
def test_pruning_leaves_a_working_model(name):
    x = _x()
    m = mobilenets.create_model(name).eval()
    last = len(m.feature_info) - 1
    with torch.no_grad():
        taps = m.forward_intermediates(x, intermediates_only=True)
        same = copy.deepcopy(m)
        same.prune_intermediate_layers([last], prune_head=False)
        torch.testing.assert_close(same(x), m(x))
        for i in range(last + 1):
            p = copy.deepcopy(m)
            assert p.prune_intermediate_layers([i]) == [i]
            torch.testing.assert_close(p(x), taps[i])  # no head: forward is the last kept map
            assert p.num_features == m.feature_info[i]["num_chs"] and p.num_classes == 0
            p.reset_classifier(7, "avg")
            assert p(x).shape == (2, 7) and p.head_hidden_size == p.num_features
        p = copy.deepcopy(m)
        p.prune_intermediate_layers([0], extra_blocks=True)
        p.reset_classifier(7, "avg")
        assert p.forward_head(p.forward_features(x), pre_logits=True).shape[1] == p.num_features == \
            m.layer_shapes()[0][0]
        blocks = m.forward_intermediates(x, indices=[0, 3], extra_blocks=True, intermediates_only=True)
        steps = m.walk(x, blocks=True, keep={0, 3})
        torch.testing.assert_close(blocks, [mobilenets.models.base.split_state(s.state)[0] for s in steps][:2])


@pytest.mark.parametrize("name", FAMILIES)
def test_grad_checkpointing_same_outputs_and_gradients(name):
    x = _x()
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        m = mobilenets.create_model(name, drop_rate=0.0)
        m.set_grad_checkpointing(ckpt)
        m.train()
        m(x).pow(2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-4, atol=1e-6, msg=k)
    f = mobilenets.create_model(name, features_only=True)
    f.set_grad_checkpointing(True)
    sum(o.mean() for o in f.train()(x)).backward()
    assert all(p.grad is not None for p in f.parameters())


@pytest.mark.parametrize("name", FAMILIES)
def test_group_matcher_and_no_weight_decay_with_timms_helpers(name):
    timm = pytest.importorskip("timm")
    from timm.models._manipulate import group_parameters
    from timm.optim import param_groups_layer_decay

    m = mobilenets.create_model(name)
    names = [n for n, _ in m.named_parameters()]
    groups = group_parameters(m, m.group_matcher(coarse=False), reverse=True)
    assert len(set(groups.values())) > len(m.stages)  # stem, one group per block, the rest
    coarse = group_parameters(m, m.group_matcher(coarse=True), reverse=True)
    assert len(set(coarse.values())) >= len(m.stages) + 1
    for pattern in m.no_weight_decay():
        assert pattern in names
    # layer-wise LR decay now sees the depth: the stem gets the smallest scale, the head 1.0
    pg = param_groups_layer_decay(m, weight_decay=0.05, layer_decay=0.5, no_weight_decay_list=m.no_weight_decay())
    scales = {g["lr_scale"] for g in pg}
    assert max(scales) == 1.0 and min(scales) < 1e-2
    assert timm  # the reference helpers ran on our model


@pytest.mark.parametrize("name", SCRIPTABLE)
def test_torch_jit_script(name):
    """Every conv family scripts (timm's models do), eagerly and after FX tracing; the scripted
    forward equals eager."""
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    m = mobilenets.create_model(name).eval()
    x = _x(1)
    with torch.no_grad():
        ref = m(x)
        torch.testing.assert_close(torch.jit.script(m)(x), ref)
        node = get_graph_node_names(m)[1][-1]
        fx = torch.jit.script(create_feature_extractor(m, return_nodes=[node]))
        torch.testing.assert_close(fx(x)[node], ref)


def test_mobileformer_says_why_it_does_not_script():
    with pytest.raises(NotImplementedError, match="torch.jit.script does not take Mobile-Former"):
        torch.jit.script(mobilenets.create_model("mobileformer_26m"))
