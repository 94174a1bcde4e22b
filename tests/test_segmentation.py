"""Segmentation on every backbone: exact to torchvision's MobileNetV3-Large segmenters (LR-ASPP,
DeepLabV3 with aux, the unreleased FCN assembled from its pieces), and the torchvision contract,
parameter counts, cut points and checkpoint errors for all."""

import warnings

import pytest
import torch
from torchvision.models import segmentation as tvs

import mobilenets
from conftest import MAX_ACTIVATION_RMS, activation_scale, randomize_bn, rel_max_err
from mobilenets.tasks.segmentation import segmentation_taps

SIZES = [(520, 520), (353, 497)]  # torchvision's evaluation size, and a non-square odd one


def _tv_fcn(num_classes: int, aux_loss: bool):
    """torchvision's unreleased FCN-MobileNetV3-Large, assembled as its DeepLabV3 is
    (``_deeplabv3_mobilenetv3`` with ``FCNHead`` as the classifier): the reference."""
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.fcn import FCN, FCNHead

    features = torchvision_backbone().features
    layers = {"16": "out", **({"4": "aux"} if aux_loss else {})}
    return FCN(IntermediateLayerGetter(features, layers), FCNHead(960, num_classes),
               FCNHead(40, num_classes) if aux_loss else None)


def torchvision_backbone():
    from torchvision.models import mobilenet_v3_large
    return mobilenet_v3_large(weights=None, dilated=True)


TV_BUILDERS = {
    "lraspp_mobilenetv3_large_100": (lambda: tvs.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=11), {}),
    "deeplabv3_mobilenetv3_large_100": (lambda: tvs.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=11, aux_loss=True), {"aux_loss": True}),
    "fcn_mobilenetv3_large_100": (lambda: _tv_fcn(11, True), {"aux_loss": True}),
}


def _batch(size, seed=0, n=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, *size, generator=g)


@pytest.fixture(scope="module")
def tv_models():
    """torchvision's three segmenters with random weights and BatchNorm statistics calibrated on
    a random batch (well conditioned; asserted in the test)."""
    out = {}
    for name, (build, _) in TV_BUILDERS.items():
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = build()
        randomize_bn(m, calib=_batch((256, 256), seed=1, n=2))
        out[name] = m.eval()
    return out


@pytest.mark.parametrize("name", list(TV_BUILDERS))
def test_torchvision_segmenter_checkpoint_gives_the_same_logits(name, tv_models, tmp_path):
    ref = tv_models[name]
    kw = TV_BUILDERS[name][1]
    path = tmp_path / "tv.pth"
    torch.save(ref.state_dict(), path)
    ours = mobilenets.create_model(name, num_classes=11, pretrained=path, **kw).eval()
    heads = ["out", "aux"] if kw.get("aux_loss") else ["out"]
    for size in SIZES:
        x = _batch(size)
        if size == SIZES[0]:
            assert activation_scale(ref, x) <= MAX_ACTIVATION_RMS  # well conditioned: fp32 differences stay fp32-sized
        with torch.no_grad():
            r, o = ref(x), ours(x)
        assert sorted(o) == sorted(heads) and sorted(r) == sorted(heads)
        for k in heads:
            assert o[k].shape == (1, 11, *size)
            assert rel_max_err(r[k], o[k]) <= 1e-4, (k, size)
    # float64: the same function, not just close in fp32
    ref64, ours64 = ref.double(), ours.double()
    try:
        x = _batch((129, 97)).double()
        with torch.no_grad():
            r, o = ref64(x), ours64(x)
        for k in heads:
            assert rel_max_err(r[k], o[k]) <= 1e-10
    finally:
        ref.float()


def test_pinned_parameter_counts_match_torchvision():
    # torchvision's weight metadata (models/segmentation) and its MobileNetV3 write-up: LR-ASPP 3,221,538; DeepLabV3 11,029,328 with aux, 11,025,477 without;
    # the FCN variant 5.05 M
    count = mobilenets.count_params
    assert count(mobilenets.create_model("lraspp_mobilenetv3_large_100")) == 3_221_538
    assert count(mobilenets.create_model("deeplabv3_mobilenetv3_large_100", aux_loss=True)) == 11_029_328
    assert count(mobilenets.create_model("deeplabv3_mobilenetv3_large_100")) == 11_025_477
    fcn = mobilenets.create_model("fcn_mobilenetv3_large_100")
    assert count(fcn) == count(_tv_fcn(21, False)) == 5_051_093
    assert round(count(fcn) / 1e6, 2) == 5.05


def test_real_voc_checkpoint_layout_loads(tmp_path):
    # torchvision's COCO-with-VOC-labels checkpoints are state dicts of these very models (21 classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tv = tvs.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    torch.save(tv.state_dict(), tmp_path / "voc.pth")
    m = mobilenets.create_model("deeplabv3_mobilenetv3_large_100", aux_loss=True, pretrained=tmp_path / "voc.pth")
    assert m.num_classes == 21 and m.aux_loss
    with pytest.raises(mobilenets.CheckpointError, match=r"aux_classifier.*aux_loss|aux_loss"):
        mobilenets.create_model("deeplabv3_mobilenetv3_large_100", pretrained=tmp_path / "voc.pth")


def test_every_backbone_has_the_three_segmenters():
    from mobilenets.models.registry import task_backbones
    backbones = task_backbones()  # every classification backbone but MobileNetV5 (NOT_TASK_BACKBONES)
    seg = set(mobilenets.list_models(task="segmentation"))
    for b in backbones:
        assert {f"lraspp_{b}", f"deeplabv3_{b}", f"fcn_{b}"} <= seg
    assert len(seg) == 3 * len(backbones)
    assert mobilenets.list_models("lraspp*") == sorted(f"lraspp_{b}" for b in backbones)
    assert mobilenets.get_entry("lraspp_mobilenetv3_large_100").reference == {
        "torchvision": "lraspp_mobilenet_v3_large"}


# one small model per family in the default run; every backbone with -m slow
SMOKE = ["mobilenetv1_025", "mobilenetv2_050", "mobilenetv3_large_100", "mobilenetv3_small_050",
         "mobilenetv4_conv_small", "mobilenetv4_hybrid_medium_075", "mobileformer_26m"]
BACKBONES = [pytest.param(b, marks=() if b in SMOKE else pytest.mark.slow)
             for b in mobilenets.list_models(task="classification")]


@pytest.mark.parametrize("backbone", BACKBONES)
def test_segmenter_contract_on_every_backbone(backbone):
    """torchvision's contract on each backbone: ``{"out"}`` (+ ``"aux"``) at the input size, the
    low level at stride 8 and the high level at stride 16, gradients everywhere."""
    torch.manual_seed(0)
    size = (97, 130)  # odd and non-square: the heads interpolate back to it
    for kind, kw in (("lraspp_{}", {}), ("deeplabv3_{}", {"aux_loss": True})):
        model = mobilenets.create_model(kind.format(backbone), num_classes=5, **kw)
        maps = model.backbone(torch.randn(1, 3, 128, 160))
        strides = {k: 128 // v.shape[-2] for k, v in maps.items()}
        assert strides == ({"low": 8, "high": 16} if not kw else {"aux": 8, "out": 16}), strides
        model.train()
        out = model(torch.randn(2, 3, *size))
        assert sorted(out) == (["aux", "out"] if kw else ["out"])
        assert all(v.shape == (2, 5, *size) and torch.isfinite(v).all() for v in out.values())
        sum(v.square().mean() for v in out.values()).backward()
        assert all(p.grad is not None for p in model.parameters()), kind


def test_fcn_contract_and_output_stride_8():
    m = mobilenets.create_model("fcn_mobilenetv4_conv_small", num_classes=3, aux_loss=True, output_stride=8).eval()
    assert m.output_stride == 8
    with torch.no_grad():
        maps = m.backbone(torch.randn(1, 3, 128, 128))
        assert {k: v.shape[-1] for k, v in maps.items()} == {"aux": 16, "out": 16}
        assert m(torch.randn(1, 3, 100, 90))["out"].shape == (1, 3, 100, 90)


def test_cut_points_follow_torchvision_on_mnv3_and_the_same_rule_elsewhere():
    v3 = mobilenets.create_model("mobilenetv3_large_100", output_stride=16)
    # torchvision: stage_indices [0, 2, 4, 7, 13, 16]; low = [-4] (features.4, 40 ch), high = [-1]
    assert segmentation_taps(v3) == [("out", 4), ("out", 16)]
    seg = mobilenets.create_model("lraspp_mobilenetv3_large_100")
    assert seg.backbone.channels == [40, 960]
    mf = mobilenets.create_model("lraspp_mobileformer_26m").eval()
    assert mf.output_stride == 16
    with torch.no_grad():
        maps, tokens = mf.backbone.forward_with_tokens(torch.randn(1, 3, 128, 128))  # tokens exposed
    assert tokens.shape == (1, 3, 128) and maps["low"].shape[-1] == 16 and maps["high"].shape[-1] == 8


def test_a_backbone_without_a_stride_8_map_names_the_strides_it_has():
    class Fake(torch.nn.Module):
        def blocks(self):
            # stem (stride 2), then a stride-2 and a stride-4 block: strides 2, 4, 16
            return [("stages.0.0", torch.nn.Conv2d(3, 3, 1, stride=2)), ("stages.0.1", torch.nn.Conv2d(3, 3, 1, stride=4))]

    with pytest.raises(ValueError, match=r"strides \[2, 4, 16\] only"):
        segmentation_taps(Fake())


def test_pretrained_backbone_loads_a_classifier(tmp_path):
    cls = mobilenets.create_model("mobilenetv4_conv_small", num_classes=10)
    mobilenets.save_weights(cls, tmp_path / "cls.safetensors")
    seg = mobilenets.create_model("lraspp_mobilenetv4_conv_small", num_classes=11,
                                  pretrained_backbone=tmp_path / "cls.safetensors")
    assert torch.equal(seg.backbone.body.stem.conv.weight, cls.stem.conv.weight)
    other = mobilenets.create_model("mobilenetv2_050")
    mobilenets.save_weights(other, tmp_path / "v2.safetensors")
    with pytest.raises(mobilenets.CheckpointError, match="not a checkpoint of the backbone mobilenetv4_conv_small"):
        mobilenets.create_model("deeplabv3_mobilenetv4_conv_small", pretrained_backbone=tmp_path / "v2.safetensors")


def test_segmenter_checkpoint_round_trip_and_mismatch(tmp_path):
    a = mobilenets.create_model("lraspp_mobilenetv2_050", num_classes=4).eval()
    torch.save(a.state_dict(), tmp_path / "seg.pth")
    b = mobilenets.create_model("lraspp_mobilenetv2_050", num_classes=4, pretrained=tmp_path / "seg.pth").eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(a(x)["out"], b(x)["out"])
    with pytest.raises(mobilenets.CheckpointError, match="num_classes"):
        mobilenets.create_model("lraspp_mobilenetv2_050", num_classes=7, pretrained=tmp_path / "seg.pth")


def test_bad_options_and_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="no auxiliary head"):
        mobilenets.create_model("lraspp_mobilenetv2_050", aux_loss=True)
    with pytest.raises(ValueError, match="segmentation model"):
        mobilenets.create_model("lraspp_mobilenetv2_050", features_only=True)
    with pytest.raises(ValueError, match="output_stride given twice"):
        mobilenets.create_model("fcn_mobilenetv2_050", backbone_kwargs={"output_stride": 8})
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32"):
        mobilenets.create_model("fcn_mobilenetv2_050", output_stride=4)
    m = mobilenets.create_model("lraspp_mobilenetv2_050").eval()
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, H, W\)"):
        m(torch.randn(1, 1, 96, 96))
    with pytest.raises(TypeError, match="floating-point"):
        m(torch.zeros(1, 3, 96, 96, dtype=torch.uint8))


def test_cli_list_and_info_for_segmenters(capsys):
    import json

    from mobilenets.cli import main
    assert main(["list", "lraspp_mobilenetv3_large_10*", "--task", "segmentation", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    # torchvision reports 2.086 GFLOPs (MACs) for LR-ASPP at 520x520
    assert rows == [{"name": "lraspp_mobilenetv3_large_100", "family": "lraspp", "params_m": 3.222,
                     "backbone": "mobilenetv3_large_100", "macs_m_520": pytest.approx(2086, rel=0.01)}]
    assert main(["info", "deeplabv3_mobilenetv3_large_100"]) == 0
    out = capsys.readouterr().out
    assert "out of layer 16" in out and "960" in out and "11.025 M" in out
