"""optimize_for_cpu: BN-folded convs as oneDNN prepacked convolutions with fused activations."""

import copy

import pytest
import torch
import torch.nn as nn

import mobilenets
from conftest import randomize_bn, rel_max_err
from mobilenets.deploy import PackedConvAct, fuse, onednn_available, optimize_for_cpu
from mobilenets.layers import ConvNormAct

pytestmark = pytest.mark.skipif(not onednn_available(), reason="PyTorch built without oneDNN")

FAMILIES = ["mobilenetv1_050", "mobilenetv2_035", "mobilenetv3_small_050", "mobilenetv4_conv_small_035",
            "mobilenetv4_hybrid_medium_075", "mobileformer_26m", "mobilenetv4_conv_aa_medium"]


@pytest.mark.parametrize("name", FAMILIES)
def test_same_outputs_as_the_model_any_batch_and_size(name):
    torch.manual_seed(0)
    model = randomize_bn(mobilenets.create_model(name)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net = optimize_for_cpu(model, input_size=(64, 64))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # original untouched
    packed = [m for m in net.modules() if isinstance(m, PackedConvAct)]
    # every conv + activation block was packed; only plain convs (SE, attention) remain
    assert packed and not any(isinstance(m, ConvNormAct) for m in net.modules())
    model64 = copy.deepcopy(model).double()
    for shape in [(1, 3, 64, 64), (3, 3, 80, 72)]:  # packed for (1, 3, 64, 64); others still run
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = model(x)
            truth = model64(x.double())
            y = net(x.contiguous(memory_format=torch.channels_last))
            y_nchw = net(x)
        # the packed fp32 path loses no precision against the float64 truth (within twice the
        # model's own fp32 error; BN folding itself is exact in float64: test_fuse.py), and
        # agrees with the model as the parity tests ask. A direct fp32 1e-5 bound is two fp32
        # errors added (1.06e-5 for MobileNetV1 with oneDNN capped at SSE4.1).
        for out in (y, y_nchw):
            assert rel_max_err(truth, out.double()) <= 2 * rel_max_err(truth, ref.double()) + 1e-6
            assert rel_max_err(ref, out) <= 1e-4


def test_activations_are_fused_as_post_ops():
    model = mobilenets.create_model("mobilenetv3_small_050").eval()
    net = optimize_for_cpu(model, input_size=(64, 64))
    attrs = {m.attr for m in net.modules() if isinstance(m, PackedConvAct)}
    assert {"relu", "hardswish", "none"} <= attrs  # V3: ReLU, h-swish and linear projections
    v2 = optimize_for_cpu(mobilenets.create_model("mobilenetv2_035"), input_size=(64, 64))
    relu6 = [m for m in v2.modules() if isinstance(m, PackedConvAct) and m.attr == "hardtanh"]
    assert relu6 and all(m.scalars == [0.0, 6.0] for m in relu6)


def test_rejects_what_it_cannot_pack(monkeypatch):
    block = ConvNormAct(8, 8, 3, act="relu")  # BatchNorm not folded
    with pytest.raises(ValueError, match="BatchNorm folded"):
        PackedConvAct(block, (1, 8, 16, 16))
    lrelu = fuse(nn.Sequential(ConvNormAct(8, 8, 3, act=nn.LeakyReLU)))[0]  # no oneDNN post-op here
    with pytest.raises(ValueError, match="an activation oneDNN can fuse"):
        PackedConvAct(lrelu, (1, 8, 16, 16))
    with pytest.raises(ValueError, match=r"runs fp32 models.*model.float\(\)"):
        optimize_for_cpu(mobilenets.create_model("mobilenetv2_035").double())
    import mobilenets.deploy.cpu as cpu
    monkeypatch.setattr(cpu, "onednn_available", lambda: False)
    with pytest.raises(RuntimeError, match="use mobilenets.deploy.fuse"):
        cpu.optimize_for_cpu(mobilenets.create_model("mobilenetv2_035"))
