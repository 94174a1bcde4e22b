"""TensorFlow "SAME" padding (``pad_type="same"``): the conv layer option the TF-ported
checkpoints (timm's ``tf_mobilenetv3_*``) need, and the models built with it through every
path that runs a model (fuse, torch.export, FX, ONNX Runtime, CPU packing, QAT refusal)."""

import math

import pytest
import torch
import torch.nn as nn

import mobilenets
from mobilenets.layers import Conv2dSame, ConvNormAct, create_conv2d
from mobilenets.layers.conv import tf_same_pad
from conftest import randomize_bn

SIZES = [(224, 224), (193, 161), (8, 9), (7, 7), (10, 3), (33, 64)]
# (kernel, stride, dilation): stride 2 pads per size, asymmetric on even sizes; stride 1 odd is static
CASES = [(3, 2, 1), (5, 2, 1), (7, 2, 1), (1, 2, 1), (4, 2, 1), (3, 1, 1), (5, 1, 2), (2, 1, 1), (3, 3, 1)]


def _tf_reference(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    # TensorFlow's definition (tf.nn.conv2d padding="SAME"): ceil(size / s) outputs, the total
    # padding that needs split with the extra pixel after
    out = math.ceil(size / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def test_pad_amounts_match_tensorflow_definition():
    for size in range(1, 70):
        for k, s, d in CASES:
            assert tf_same_pad(size, k, s, d) == _tf_reference(size, k, s, d), (size, k, s, d)
    assert tf_same_pad(224, 3, 2) == (0, 1) and tf_same_pad(225, 3, 2) == (1, 1)  # the asymmetric case


@pytest.mark.parametrize("k,s,d", CASES)
def test_conv_equals_timm_same_padding(k, s, d):
    layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    ref = layers.create_conv2d(4, 6, k, stride=s, dilation=d, padding="same")
    ours = create_conv2d(4, 6, k, s, d, bias=False, pad_type="same")
    ours.load_state_dict(ref.state_dict())
    # static symmetric padding exactly where timm's is static, dynamic (Conv2dSame) elsewhere
    assert isinstance(ours, Conv2dSame) == isinstance(ref, layers.Conv2dSame)
    for hw in SIZES:
        x = torch.randn(1, 4, *hw)
        assert torch.equal(ours(x), ref(x)), hw


def test_static_where_same_and_symmetric_default():
    conv = create_conv2d(8, 8, 3, 1, pad_type="same")
    assert type(conv) is nn.Conv2d and conv.padding == (1, 1)
    conv = create_conv2d(8, 8, 3, 2)  # the default: symmetric, whatever the size
    assert type(conv) is nn.Conv2d and conv.padding == (1, 1)
    x = torch.randn(1, 8, 224, 224)
    same = create_conv2d(8, 8, 3, 2, pad_type="same")
    same.load_state_dict(conv.state_dict())
    # both give 112x112 at 224, but TF pads bottom / right only: the maps differ by a shift
    assert same(x).shape == conv(x).shape and not torch.allclose(same(x), conv(x))
    with pytest.raises(ValueError, match=r"unknown pad_type 'valid'; expected one of \('', 'same'\)"):
        create_conv2d(8, 8, 3, 2, pad_type="valid")
    with pytest.raises(ValueError, match="pad_type must be '' or 'same'"):
        mobilenets.get_entry("tf_mobilenetv3_small_100").spec.replace(pad_type="SAME")


def test_tf_models_carry_the_option():
    model = mobilenets.create_model("tf_mobilenetv3_small_100")
    assert model.spec.pad_type == "same" and model.stem.bn.eps == 1e-3
    dynamic = [n for n, m in model.named_modules() if isinstance(m, Conv2dSame)]
    # the stem and every stride-2 depthwise conv; stride-1 and 1x1 convs stay static
    assert dynamic == ["stem.conv", "stages.0.0.dw.conv", "stages.1.0.dw.conv", "stages.2.0.dw.conv",
                       "stages.4.0.dw.conv"]
    assert not any(isinstance(m, Conv2dSame) for m in mobilenets.create_model("mobilenetv3_small_100").modules())


def test_timm_checkpoint_keeps_tf_batchnorm_eps():
    timm = pytest.importorskip("timm")
    ref = timm.create_model("tf_mobilenetv3_small_minimal_100")
    ours = mobilenets.create_model("tf_mobilenetv3_small_minimal_100")
    mobilenets.load_weights(ours, ref.state_dict())
    # a timm checkpoint normally means eps 1e-5 (timm's PyTorch training); the TF ports fix 1e-3
    assert {m.eps for m in ours.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-3}


@pytest.fixture(scope="module")
def tf_small():
    torch.manual_seed(0)
    return randomize_bn(mobilenets.create_model("tf_mobilenetv3_small_075")).eval()


def test_fuse_fx_and_export(tf_small):
    from mobilenets.deploy import fuse

    fused = fuse(tf_small)
    gm = torch.fx.symbolic_trace(tf_small)
    ep = torch.export.export(tf_small, (torch.randn(2, 3, 96, 96),), dynamic_shapes={
        "x": {2: torch.export.Dim("h", min=33, max=512), 3: torch.export.Dim("w", min=33, max=512)}})
    with torch.no_grad():
        for hw in [(96, 96), (97, 75), (64, 128)]:  # one traced graph, every parity of size
            x = torch.randn(2, 3, *hw)
            ref = tf_small(x)
            torch.testing.assert_close(fused(x), ref, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(gm(x), ref)
            torch.testing.assert_close(ep.module()(x), ref)


@pytest.mark.parametrize("size", [(96, 128), (97, 75)])
def test_onnx_export_runs_in_onnx_runtime(tf_small, size, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from mobilenets.deploy import export_onnx

    path = export_onnx(tf_small, tmp_path / "tf.onnx", input_size=size, dynamic_batch=True)  # verify=True
    x = torch.randn(3, 3, *size)
    (y,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})
    with torch.no_grad():
        ref = tf_small(x).numpy()
    assert abs(y - ref).max() <= 1e-4 * abs(ref).max()


def test_cpu_packing_keeps_dynamic_padding(tf_small):
    from mobilenets.deploy.cpu import PackedConvAct, optimize_for_cpu

    packed = optimize_for_cpu(tf_small, input_size=(96, 96))
    assert any(isinstance(m, PackedConvAct) for m in packed.modules())
    assert any(isinstance(m, Conv2dSame) for m in packed.modules())  # not packed: pads per size
    with torch.no_grad():
        for hw in [(96, 96), (97, 75)]:
            x = torch.randn(1, 3, *hw)
            torch.testing.assert_close(packed(x), tf_small(x), rtol=1e-4, atol=1e-4)


def test_qat_refuses_dynamic_padding_by_name():
    from mobilenets.deploy.qat.modules import QConv2d

    with pytest.raises(ValueError, match="TF 'SAME' padding"):
        QConv2d.from_float(ConvNormAct(8, 8, 3, 2, pad_type="same").conv)


def test_profile_and_info_of_a_tf_model(capsys):
    from mobilenets.analysis.profile import profile
    from mobilenets.cli import main

    tf, pt = profile("tf_mobilenetv3_large_100"), profile("mobilenetv3_large_100")
    # padding adds no MACs (same output sizes) ...
    assert tf.macs == pt.macs and tf.params == pt.params
    # ... but the stem conv reads the padded 225x225 input at 224x224 (TF pads bottom / right)
    (stem,) = [r for r in tf.layers if r.name == "stem.conv"]
    assert stem.input_bytes == 3 * 225 * 225 * 4 and stem.module == "Conv2dSame"
    assert main(["info", "tf_mobilenetv3_large_100"]) == 0
    out = capsys.readouterr().out
    assert "timm tf_mobilenetv3_large_100" in out and "stages.6  960x7x7" in out
