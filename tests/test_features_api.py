"""timm compatibility of the feature API: ``forward_intermediates``,
``prune_intermediate_layers`` and ``features_only=True, feature_location="expansion"``.

Reference: a random-init timm model with calibrated BatchNorm statistics
(``conftest.randomize_bn``), its state_dict loaded into ours, both compared at a non-square size.
"""

import copy

import pytest
import torch

import mobilenets
from conftest import randomize_bn

timm = pytest.importorskip("timm")

SIZE = (193, 161)
TIMM_NAMES = ["mobilenetv3_large_100", "mobilenetv4_conv_small", "mobilenetv4_hybrid_medium", "mobilenetv2_100",
              # TF "SAME" padding with the stem as a level; EfficientNet-class conv_head, group convs
              "tf_mobilenetv3_small_100", "mobilenet_edgetpu_v2_xs"]
# every timm name the library has, for the cheap check (feature_info of a model built on meta)
ALL_TIMM = [n for n in mobilenets.list_models(task="classification") if mobilenets.get_entry(n).reference.get("timm")]
INDICES = [None, 2, [0, 2], [-1, 1], [3, 1, 3]]


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


@pytest.fixture(scope="module", params=TIMM_NAMES)
def pair(request):
    torch.manual_seed(0)
    ref = randomize_bn(timm.create_model(request.param), calib_size=SIZE).eval()
    ours = mobilenets.create_model(request.param, pretrained=ref.state_dict()).eval()
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    return ref, ours, x


def test_feature_info_is_timms(pair):
    ref, ours, _ = pair
    assert [(f["num_chs"], f["reduction"]) for f in ours.feature_info] == \
           [(f["num_chs"], f["reduction"]) for f in ref.feature_info]


@pytest.mark.parametrize("name", ALL_TIMM)
def test_feature_info_is_timms_everywhere(name):
    ref_name = mobilenets.get_entry(name).reference["timm"]
    with torch.device("meta"):
        ref = timm.create_model(ref_name, features_only=True)
        ours = mobilenets.create_model(name, features_only=True)
    assert [(f["num_chs"], f["reduction"]) for f in ours.feature_info] == \
           [(f["num_chs"], f["reduction"]) for f in ref.feature_info.get_dicts()]


@pytest.mark.parametrize("indices", INDICES, ids=str)
def test_forward_intermediates_match_timm(pair, indices):
    ref, ours, x = pair
    with torch.no_grad():
        r_final, r_maps = ref.forward_intermediates(x, indices=indices)
        o_final, o_maps = ours.forward_intermediates(x, indices=indices)
        assert len(o_maps) == len(r_maps)
        for o, r in zip(o_maps, r_maps):
            _close(o, r)
        _close(o_final, r_final)
        only = ours.forward_intermediates(x, indices=indices, intermediates_only=True)
        early = ours.forward_intermediates(x, indices=indices, intermediates_only=True, stop_early=True)
        r_early = ref.forward_intermediates(x, indices=indices, intermediates_only=True, stop_early=True)
    for o, e, r in zip(only, early, r_early):
        _close(o, r)
        _close(e, r)


@pytest.mark.parametrize("indices", [1, [1, -2], [0], [-1]], ids=str)
def test_prune_intermediate_layers_matches_timm(pair, indices):
    ref, ours, x = pair
    ref, ours = copy.deepcopy(ref), copy.deepcopy(ours)
    assert ours.prune_intermediate_layers(indices) == ref.prune_intermediate_layers(indices)
    # a working model, as timm's: no classifier, forward returns the (unpooled) final map
    assert ours.num_features == ref.num_features and ours.num_classes == ref.num_classes == 0
    with torch.no_grad():
        _close(ours(x), ref(x))
        r_maps = ref.forward_intermediates(x, indices=indices, intermediates_only=True)
        o_maps = ours.forward_intermediates(x, indices=indices, intermediates_only=True)
    assert len(o_maps) == len(r_maps)
    for o, r in zip(o_maps, r_maps):
        _close(o, r)


def test_bad_indices_and_format_raise():
    model = mobilenets.create_model("mobilenetv4_conv_small")
    x = torch.randn(1, 3, 64, 64)
    for bad in (0, 6, [5], [-6], ["a"]):
        with pytest.raises(ValueError, match="5 feature levels"):
            model.forward_intermediates(x, indices=bad)
    with pytest.raises(ValueError, match="output_fmt must be 'NCHW', got 'NHWC'"):
        model.forward_intermediates(x, output_fmt="NHWC")


def test_mobileformer_intermediates_and_prune():
    model = mobilenets.create_model("mobileformer_96m").eval()
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        torch.testing.assert_close(final.map, model.forward_features(x).map)
        assert [m.shape[1] for m in maps] == [f["num_chs"] for f in model.feature_info]
        assert model.prune_intermediate_layers([1, 3]) == [1, 3]
        assert model.to_former is None and len(model.stages) == 4  # stride 32 gone
        torch.testing.assert_close(model(x), maps[3])  # a working model: forward gives the last kept map
        torch.testing.assert_close(model.forward_intermediates(x, [1, 3], intermediates_only=True),
                                   [maps[1], maps[3]])


def test_v2_levels_follow_timm():
    """V2's stride-32 level is the 320-channel last block (timm's index space); the 1x1 conv
    to 1280 belongs to the head (forward_features still ends with it)."""
    fx = mobilenets.create_model("mobilenetv2_100", features_only=True)
    assert fx.width_list == [16, 24, 32, 96, 320]
    full = mobilenets.create_model("mobilenetv2_100").eval()
    assert full.num_features == 1280 and full.forward_features(torch.randn(1, 3, 64, 64)).shape[1] == 1280
    assert full.prune_intermediate_layers(indices=5, prune_head=False) == [0, 1, 2, 3, 4]
    assert full.head is not None and len(full.stages) == 8  # nothing to prune: the head still works


# --- feature_location="expansion" ---------------------------------------------------------------
def test_expansion_matches_timm_v3():
    torch.manual_seed(0)
    full = randomize_bn(timm.create_model("mobilenetv3_large_100"), calib_size=SIZE).eval()
    ref = timm.create_model("mobilenetv3_large_100", features_only=True, feature_location="expansion").eval()
    missing, _ = ref.load_state_dict(full.state_dict(), strict=False)
    assert not missing
    ours = mobilenets.create_model("mobilenetv3_large_100", pretrained=full.state_dict(), features_only=True,
                                   feature_location="expansion").eval()
    assert ours.width_list == ref.feature_info.channels()
    assert [f["reduction"] for f in ours.feature_info] == ref.feature_info.reduction()
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        for o, r in zip(ours(x), ref(x)):
            _close(o, r)


@pytest.mark.parametrize("name", ["mobilenetv4_conv_small", "mobilenetv4_hybrid_medium", "mobilenetv2_100",
                                  "mobileformer_52m"])
def test_expansion_taps_are_the_expanded_maps(name):
    """Each map is the input of the projection conv of the level's last block (captured here
    by a hook on the unpruned model), with feature_info's channels and reductions."""
    torch.manual_seed(0)
    full = mobilenets.create_model(name).eval()
    fx = mobilenets.create_model(name, pretrained=full.state_dict(), features_only=True,
                                 feature_location="expansion").eval()
    x = torch.randn(1, 3, 96, 128)
    seen, handles = {}, []
    for i, f in enumerate(fx.feature_info):
        mod = full.get_submodule(f["module"])
        if f["hook_type"] == "forward_pre":
            handles.append(mod.register_forward_pre_hook(lambda m, a, i=i: seen.setdefault(i, a[0])))
        else:
            handles.append(mod.register_forward_hook(lambda m, a, o, i=i: seen.setdefault(i, o)))
    with torch.no_grad():
        full(x)
        maps = fx(x)
    for h in handles:
        h.remove()
    assert len(maps) == len(fx.feature_info) == len(fx.width_list)
    for i, (fmap, f) in enumerate(zip(maps, fx.feature_info)):
        assert fmap.shape[1] == f["num_chs"] == fx.width_list[i]
        assert fmap.shape[-2:] == (-(-96 // f["reduction"]), -(-128 // f["reduction"]))
        torch.testing.assert_close(fmap, seen[i])
    assert max(fx.width_list) > max(f["num_chs"] for f in full.feature_info[:-1])  # the high-channel maps
    with pytest.raises(ValueError, match="feature_location must be one of"):
        mobilenets.create_model(name, features_only=True, feature_location="depthwise")
    with pytest.raises(ValueError, match="only used with features_only=True"):
        mobilenets.create_model(name, feature_location="expansion")
