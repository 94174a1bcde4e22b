"""MobileNetV5 (Gemma 3n's vision encoder) against timm 1.0.31, its reference.

timm's checkpoints (random weights; every RMSNorm scale and layer scale randomized by
``randomize_bn``) load through ``create_model(pretrained=path)`` with the same outputs: fp32
<= 1e-4 and float64 <= 1e-10 relative (``test_parity._assert_same_logits``), at small inputs
(64x64 and an odd non-square 80x66). MobileNetV5-300M has 294 M parameters, so the default run
checks every name at width 0.25 (timm's ``channel_multiplier``: the same depth, blocks, MSFA,
padding and key layout, 12-38 M parameters); the full widths, and one forward at Gemma 3n's
768x768, are marked slow. Parameter counts are pinned at full width (built on the meta device).
"""

import copy

import pytest
import torch
import torch.nn as nn

import mobilenets
from conftest import randomize_bn, rel_max_err

timm = pytest.importorskip("timm")
from test_parity import _assert_same_logits  # noqa: E402  (the one parity check: fp32 and float64)

NAMES = ["mobilenetv5_300m", "mobilenetv5_300m_enc", "mobilenetv5_base"]
SMALL = [(64, 64), (80, 66)]
WIDTH = 0.25  # the default run's width (timm: channel_multiplier)
GEMMA = "model.vision_tower.timm_model."

# timm's counts (its default configurations: mobilenetv5_300m(_enc) without classifier,
# mobilenetv5_base with 1000 classes)
PARAMS = {"mobilenetv5_300m": 294_126_912, "mobilenetv5_300m_enc": 294_126_912, "mobilenetv5_base": 82_647_976}


def _reference(name: str, width: float = WIDTH, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    kw = {} if width == 1.0 else {"channel_multiplier": width}
    return randomize_bn(timm.create_model(name, **kw), seed=seed).eval()


def _ours(name: str, source, width: float = WIDTH, **kw) -> nn.Module:
    return mobilenets.create_model(name, pretrained=source, **({} if width == 1.0 else {"width_mult": width}),
                                   **kw).eval()


def _save(ref: nn.Module, path) -> str:
    if path.suffix == ".pth":
        torch.save(ref.state_dict(), path)
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, path)
    return str(path)


# --- architecture -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_param_counts_pinned_and_equal_to_timm(name):
    with torch.device("meta"):
        ours, ref = mobilenets.create_model(name), timm.create_model(name)
        classes = mobilenets.create_model("mobilenetv5_300m", num_classes=1000)
    assert mobilenets.count_params(ours) == sum(p.numel() for p in ref.parameters()) == PARAMS[name]
    assert ours.num_classes == ref.num_classes == (1000 if name == "mobilenetv5_base" else 0)
    assert mobilenets.count_params(classes) == PARAMS["mobilenetv5_300m"] + 2048 * 1000 + 1000
    assert [b.kind for b in ours.spec.blocks()].count("mqa") == (33 if "300m" in name else 13)


def test_registry_and_spec():
    for name in NAMES:
        entry = mobilenets.get_entry(name)
        assert entry.family == "mobilenetv5" and entry.reference == {"timm": name}
    specs = {n: mobilenets.get_entry(n).spec for n in NAMES}
    assert specs["mobilenetv5_300m"].stages == specs["mobilenetv5_300m_enc"].stages
    assert (specs["mobilenetv5_300m_enc"].padding, specs["mobilenetv5_300m"].padding) == ("same", "symmetric")
    assert specs["mobilenetv5_300m_enc"].encoder and not specs["mobilenetv5_300m"].encoder
    # the 300M's stage-2 attention downsamples keys / values (v2); stage 3's and the base's do not
    mqa = [(b.heads, b.key_dim, b.kv_stride, b.out) for st in specs["mobilenetv5_300m"].stages for b in st
           if b.kind == "mqa"]
    assert mqa == [(12, 64, 2, 640)] * 14 + [(16, 96, 1, 1280)] * 19
    # timm's encoder ignores num_classes; ours gives it a pooled classifier when asked for one
    enc = mobilenets.create_model("mobilenetv5_300m_enc", num_classes=10, width_mult=0.25).eval()
    with torch.no_grad():
        assert enc(torch.randn(1, 3, 64, 64)).shape == (1, 10)


# --- parity with timm -----------------------------------------------------------------------------
# mobilenetv5_300m is the encoder's trunk with symmetric padding and a head: the default run has the
# encoder (the same 300M trunk, SAME padding) and the base (a head); all three with -m slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "mobilenetv5_300m" else n
                                  for n in NAMES])
def test_timm_parity(name, tmp_path):
    ref = _reference(name)
    path = _save(ref, tmp_path / ("ref.safetensors" if name.endswith("enc") else "ref.pth"))
    ours = _ours(name, path)
    _assert_same_logits(ref, ours, sizes=SMALL)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_timm_parity_full_width(name, tmp_path):
    ref = _reference(name, width=1.0)
    ours = _ours(name, _save(ref, tmp_path / "ref.pth"), width=1.0)
    _assert_same_logits(ref, ours, sizes=SMALL)


@pytest.mark.slow
def test_timm_parity_gemma3n_size():
    """Gemma 3n's encoder at its own input size, 768x768: the (N, 2048, 16, 16) map."""
    ref = _reference("mobilenetv5_300m_enc", width=1.0)
    ours = _ours("mobilenetv5_300m_enc", ref.state_dict(), width=1.0)
    x = torch.randn(1, 3, 768, 768, generator=torch.Generator().manual_seed(768))
    with torch.no_grad():
        a, b = ref(x), ours(x)
    assert a.shape == b.shape == (1, 2048, 16, 16)
    assert rel_max_err(a, b) <= 1e-4


def test_same_padding_is_what_tells_the_encoder_apart():
    """The encoder pads TensorFlow's way: the same weights in the symmetric-padding trunk
    (mobilenetv5_300m) give another map at even sizes, so the encoder's parity can fail."""
    torch.manual_seed(0)
    enc = randomize_bn(mobilenets.create_model("mobilenetv5_300m_enc", width_mult=WIDTH)).eval()
    sym = _ours("mobilenetv5_300m", enc.state_dict())
    # the strided convs: the stem, 4 stage-opening blocks, the 14 key / value downsamplings x 2
    assert sum(isinstance(m, mobilenets.layers.Conv2dSame) for m in enc.modules()) == 5 + 14 * 2
    assert not any(isinstance(m, mobilenets.layers.Conv2dSame) for m in sym.modules())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert rel_max_err(enc.forward_features(x), sym.forward_features(x)) > 1e-2


# --- Gemma 3n checkpoints ------------------------------------------------------------------------------
def test_gemma3n_vision_tower_prefix_loads_into_the_encoder(tmp_path):
    ref = _reference("mobilenetv5_300m_enc")
    plain = ref.state_dict()
    gemma = {GEMMA + k: v for k, v in plain.items()}
    # the rest of a Gemma 3n checkpoint is not the vision encoder's: left out, as timm's filter does
    gemma["model.language_model.embed_tokens.weight"] = torch.zeros(4, 2)
    gemma["model.audio_tower.conformer.0.norm.weight"] = torch.zeros(3)
    assert mobilenets.weights.detect_layout(gemma) == "gemma3n"
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in gemma.items()}, tmp_path / "gemma3n.safetensors")
    ours = _ours("mobilenetv5_300m_enc", str(tmp_path / "gemma3n.safetensors"))
    direct = _ours("mobilenetv5_300m_enc", plain)
    report = mobilenets.load_weights(copy.deepcopy(direct), gemma)
    assert report.layout == "gemma3n" and not report.unexpected and not report.missing
    x = torch.randn(1, 3, 80, 66)
    with torch.no_grad():
        out = ours(x)
        assert torch.equal(out, direct(x))
        assert rel_max_err(ref(x), out) <= 1e-4


# --- the backbone contract, against timm ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mobilenetv5_300m_enc", "mobilenetv5_base"])
def test_feature_info_and_features_only_equal_timm(name):
    from timm.models._features import FeatureGetterNet

    ref = _reference(name)
    ref_f = FeatureGetterNet(copy.deepcopy(ref), out_indices=(0, 1, 2, 3, 4)).eval()
    ours = _ours(name, ref.state_dict(), features_only=True)
    assert [f["num_chs"] for f in ours.feature_info] == ref_f.feature_info.channels() == \
        [64, 32, 64, 160 if "300m" in name else 128, 320 if "300m" in name else 256]
    assert [f["reduction"] for f in ours.feature_info] == ref_f.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert ours.model.msfa is None and ours.model.head is None
    x = torch.randn(1, 3, 80, 66)
    with torch.no_grad():
        for a, b in zip(ref_f(x), ours(x), strict=True):
            assert a.shape == b.shape and rel_max_err(a, b) <= 1e-4
    sub = _ours(name, ref.state_dict(), features_only=True, out_indices=(1, 3))
    assert len(sub.model.stages) == 3 and sub.width_list == [32, 160 if "300m" in name else 128]


@pytest.mark.parametrize("name", ["mobilenetv5_300m_enc", "mobilenetv5_base"])
def test_forward_intermediates_and_pruning_equal_timm(name):
    ref = _reference(name)
    ours = _ours(name, ref.state_dict())
    x = torch.randn(1, 3, 80, 66)
    with torch.no_grad():
        for kw in ({}, {"indices": 2}, {"indices": [0, 3]}):
            fa, ma = ref.forward_intermediates(x, **kw)
            fb, mb = ours.forward_intermediates(x, **kw)
            # the final output is the MSFA's, whichever maps are taken
            assert fa.shape == fb.shape and rel_max_err(fa, fb) <= 1e-4
            assert len(ma) == len(mb) and all(rel_max_err(a, b) <= 1e-4 for a, b in zip(ma, mb))
        a = ref.forward_intermediates(x, indices=[1, 2], stop_early=True, intermediates_only=True)
        b = ours.forward_intermediates(x, indices=[1, 2], stop_early=True, intermediates_only=True)
        assert all(rel_max_err(p, q) <= 1e-4 for p, q in zip(a, b, strict=True))
    # pruning drops the MSFA with the head, as timm: features end at the last kept level
    for indices in (2, [1, 3]):
        r, o = copy.deepcopy(ref), copy.deepcopy(ours)
        assert r.prune_intermediate_layers(indices) == o.prune_intermediate_layers(indices)
        assert o.msfa is None and o.num_classes == 0 and o.num_features == r.num_features
        with torch.no_grad():
            a, b = r.forward_features(x), o.forward_features(x)
            assert a.shape == b.shape and rel_max_err(a, b) <= 1e-4
            assert torch.equal(o(x), b)  # no head: forward is the map, as timm's pruned model


def test_contract_train_step_heads_and_encoder(tmp_path):
    torch.manual_seed(0)
    model = mobilenets.create_model("mobilenetv5_base", width_mult=WIDTH, num_classes=7, drop_path_rate=0.1)
    x = torch.randn(2, 3, 64, 96)
    model.train()
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, model.num_features, 16, 16)  # the MSFA's fixed grid
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
        torch.testing.assert_close(model.forward_head(feats), model(x))
        model.reset_classifier(3)
        assert model(x).shape == (2, 3)
        # our own files read back (no BatchNorm settings to carry)
        path = mobilenets.save_weights(model, tmp_path / "mnv5.safetensors")
        again = mobilenets.create_model("mobilenetv5_base", width_mult=WIDTH, num_classes=3, pretrained=path)
        assert mobilenets.weights.detect_layout(model.state_dict()) == "mobilenets"
        assert torch.equal(again.eval()(x), model(x))
        model.reset_classifier(0)
        assert model(x).shape == (2, 2048)
    enc = mobilenets.create_model("mobilenetv5_300m_enc", width_mult=WIDTH).eval()
    assert enc.num_classes == 0 and mobilenets.model_info(enc).num_classes == 0
    with torch.no_grad():
        torch.testing.assert_close(enc(x), enc.forward_features(x))
    assert isinstance(enc.get_classifier(), nn.Identity)
    enc.reset_classifier(0)  # nothing to remove
    assert isinstance(enc.get_classifier(), nn.Identity)
    enc.reset_classifier(10)  # a pooled classifier on the MSFA's map
    with torch.no_grad():
        assert enc(x).shape == (2, 10)
    assert [c for c, _ in enc.layer_shapes()][-1] == enc.feature_info[-1]["num_chs"]


# --- layers -------------------------------------------------------------------------------------------------
def test_rmsnorm_and_same_padding_layers_equal_timm():
    from timm.layers import Conv2dSame as TimmConv2dSame, RmsNorm2d

    from mobilenets.layers import Conv2dSame, RMSNorm2d, use_same_padding

    torch.manual_seed(0)
    ours, ref = RMSNorm2d(6), RmsNorm2d(6)
    ref.weight.data.uniform_(0.5, 1.5)
    ours.weight.data.copy_(ref.weight)
    x = torch.randn(2, 6, 5, 7) * 3
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-6)
    torch.testing.assert_close(ours(x).pow(2).mean(1), (ours.weight.view(1, -1, 1, 1) ** 2 * (
        x / x.pow(2).mean(1, keepdim=True).add(1e-6).sqrt()) ** 2).mean(1))

    net = nn.Sequential(nn.Conv2d(4, 4, 3, 2, 1), nn.Conv2d(4, 4, 3, 1, 1), nn.Conv2d(4, 4, 5, 2, 2, groups=4))
    tconv = TimmConv2dSame(4, 4, 5, 2, groups=4)
    tconv.load_state_dict(net[2].state_dict())
    assert use_same_padding(net) == 2  # the stride-1 odd conv already pads SAME
    assert [type(m) for m in net] == [Conv2dSame, nn.Conv2d, Conv2dSame]
    for size in ((8, 8), (9, 7), (33, 40)):
        y = torch.randn(1, 4, *size)
        torch.testing.assert_close(net[2](y), tconv(y), rtol=0, atol=1e-6)


# --- deployment ----------------------------------------------------------------------------------------------------
def test_fuse_keeps_the_function():
    from conftest import assert_same_function

    model = randomize_bn(mobilenets.create_model("mobilenetv5_base", width_mult=WIDTH)).eval()
    fused = assert_same_function(model, mobilenets.deploy.fuse, torch.randn(1, 3, 64, 64))
    assert getattr(fused, "fused", False)


def test_onnx_export_matches_eager(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from mobilenets.deploy import export_onnx

    from mobilenets.models.mobilenetv5 import MobileNetV5

    # an encoder of the base's depth (SAME padding, the MSFA's resizing): half the 300M's blocks
    spec = mobilenets.get_entry("mobilenetv5_base").spec.replace(
        name="mobilenetv5_base_enc", padding="same", encoder=True, default_classes=0)
    torch.manual_seed(0)
    model = randomize_bn(MobileNetV5(spec, num_classes=0, width_mult=WIDTH)).eval()
    path = export_onnx(model, tmp_path / "m.onnx", input_size=(80, 66), dynamic_batch=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 80, 66)
    (y,) = sess.run(None, {"input": x.numpy()})
    with torch.no_grad():
        ref = model(x)
    assert rel_max_err(ref, torch.from_numpy(y)) <= 1e-4


def test_executorch_forms_keep_the_function():
    """The "executorch" export forms MobileNetV5 gets (the tanh GELU written out, RMSNorm's channel
    mean as a 1x1 conv, the MSFA's nearest upsampling from concatenations) compute the same
    function: float64-exact, no fp32 precision lost."""
    from conftest import assert_same_function
    from mobilenets.deploy import export_swaps

    model = randomize_bn(mobilenets.create_model("mobilenetv5_base", width_mult=WIDTH)).eval()
    out = assert_same_function(model, lambda m: export_swaps.swap_for_export(m, target="executorch"),
                               torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    kinds = {type(m) for m in out.modules()}
    assert {export_swaps.XnnpackGeluTanh, export_swaps.XnnpackRMSNorm2d,
            export_swaps.XnnpackMultiScaleFusionAdapter} <= kinds


def _mobile_exports_match_eager(name, tmp_path, runtimes=("executorch", "litert"), size=(64, 64)):
    pytest.importorskip("executorch")
    pytest.importorskip("litert_torch")
    from mobilenets.deploy import export_executorch, export_tflite

    torch.manual_seed(0)
    model = randomize_bn(mobilenets.create_model(name, width_mult=WIDTH)).eval()
    for runtime in runtimes:
        fn, suffix = {"executorch": (export_executorch, "pte"), "litert": (export_tflite, "tflite")}[runtime]
        res = fn(model, tmp_path / f"m.{suffix}", input_size=size)
        assert res.fully_lowered and res.max_rel_diff <= 1e-4, res.summary()


@pytest.mark.slow  # ~40 s (mobilenetv5_base's export); the forms it needs are checked one by one in the default run
def test_executorch_export_matches_eager(tmp_path):
    """An ExecuTorch (XNNPACK) file of MobileNetV5 lowers fully and matches eager within the
    driver's 1e-4 (it differed by ~7e-4 before the tanh GELU form: test_mobile.py's
    test_executorch_gelu_tanh_form; RMSNorm and the MSFA's upsampling ran on portable kernels)."""
    _mobile_exports_match_eager("mobilenetv5_base", tmp_path, runtimes=("executorch",))


@pytest.mark.slow  # 1-3 min per file on two cores: LiteRT's conversion, the 300M's 64 blocks
@pytest.mark.parametrize("name", NAMES)
def test_mobile_exports_match_eager(name, tmp_path):
    """ExecuTorch and LiteRT files of every MobileNetV5 (the encoder's SAME padding too)."""
    _mobile_exports_match_eager(name, tmp_path)
