"""The proof: checkpoints of timm and torchvision load into our models with the same logits.

Reference models get random weights and randomized BatchNorm statistics, their state dict is
saved to a file, loaded through ``create_model(pretrained=path)``, and logits compared in eval
mode at 224x224 and at a non-square odd size: max |diff| <= 1e-4 * max |ref| in fp32, and
<= 1e-10 * max |ref| in float64.

The comparison is only meaningful when it is well conditioned: the randomized statistics are
calibrated (see ``conftest.randomize_bn``) so every activation stays O(1), which each test
asserts. Without that, activations reached ~1e9 in MobileNetV4-Hybrid and the fp32 logits of
two correct models differed by 20 % between oneDNN's AVX-512 and AVX2 kernels. The float64
comparison beside it shows the two models compute the same function, whatever the kernels.
"""

import copy

import pytest
import torch

import mobilenets
from conftest import MAX_ACTIVATION_RMS, activation_scale, randomize_bn

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

SIZES = [(224, 224), (193, 161)]
# MobileNetV5 (294 M parameters at full width, an MSFA neck, an encoder without classifier) has
# its own parity tests, at small inputs and width 0.25 by default: tests/test_mobilenetv5.py
TIMM_MODELS = [n for n in mobilenets.list_models(task="classification")
               if mobilenets.get_entry(n).reference.get("timm") and mobilenets.get_entry(n).family != "mobilenetv5"]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max() / a.abs().max())


def _assert_same_logits(ref, ours, sizes=SIZES):
    ref.eval()
    ours.eval()
    ref64, ours64 = copy.deepcopy(ref).double(), copy.deepcopy(ours).double()
    for size in sizes:
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(sum(size)))
        scale = activation_scale(ref, x)
        assert scale <= MAX_ACTIVATION_RMS, f"{size}: ill-conditioned test model (activation RMS {scale:.3g})"
        with torch.no_grad():
            err = _rel_err(ref(x), ours(x))
            err64 = _rel_err(ref64(x.double()), ours64(x.double()))
        assert err64 <= 1e-10, f"{size}: float64 relative max diff {err64:.2e}"
        assert err <= 1e-4, f"{size}: relative max diff {err:.2e}"


def test_every_timm_architecture_is_covered():
    # every issue model timm also defines has a parity test
    # 24 before the TF ports, EdgeTPU, depth / head variants and mobilenetv3_rw (16 more)
    assert len(TIMM_MODELS) == 40
    assert set(n for n in mobilenets.list_models(task="classification") if n not in TIMM_MODELS) == {
        "mobilenetv1_025", "mobilenetv1_050", "mobilenetv1_075",  # timm has no such models
        # timm's, covered by tests/test_mobilenetv5.py
        *mobilenets.list_models(family="mobilenetv5"),
        # nor Mobile-Former: its reference is the official code (tests/test_mobileformer.py)
        *mobilenets.list_models(family="mobileformer")}
    assert all(mobilenets.get_entry(n).reference.get("official")
               for n in mobilenets.list_models(family="mobileformer"))


@pytest.mark.parametrize("name", TIMM_MODELS)
def test_timm_parity(name, tmp_path):
    torch.manual_seed(0)
    ref = randomize_bn(timm.create_model(mobilenets.get_entry(name).reference["timm"]))
    # alternate file formats across models so both paths are exercised everywhere
    path = tmp_path / ("ref.safetensors" if len(name) % 2 else "ref.pth")
    if path.suffix == ".pth":
        torch.save(ref.state_dict(), path)
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, path)
    ours = mobilenets.create_model(name, pretrained=str(path))
    _assert_same_logits(ref, ours)


TV_CASES = [
    ("mobilenetv2_100", "mobilenet_v2", {}),
    ("mobilenetv3_large_100", "mobilenet_v3_large", {}),
    ("mobilenetv3_large_100", "mobilenet_v3_large", {"reduced_tail": True}),
    ("mobilenetv3_large_100", "mobilenet_v3_large", {"dilated": True}),
    ("mobilenetv3_large_100", "mobilenet_v3_large", {"reduced_tail": True, "dilated": True}),
    ("mobilenetv3_small_100", "mobilenet_v3_small", {}),
    ("mobilenetv3_small_100", "mobilenet_v3_small", {"reduced_tail": True, "dilated": True}),
]


@pytest.mark.parametrize("name,tv_name,kw", TV_CASES, ids=[f"{c[1]}-{'-'.join(c[2]) or 'plain'}" for c in TV_CASES])
def test_torchvision_parity(name, tv_name, kw, tmp_path):
    torch.manual_seed(0)
    ref = randomize_bn(getattr(torchvision.models, tv_name)(**kw))
    path = tmp_path / "tv.pth"
    torch.save(ref.state_dict(), path)
    ours = mobilenets.create_model(name, pretrained=path, **kw)
    _assert_same_logits(ref, ours)
    # torchvision trains V3 with BatchNorm eps 1e-3; loading must carry it over
    bn = ours.stem.bn
    assert (bn.eps, bn.momentum) == ((1e-3, 0.01) if "v3" in tv_name else (1e-5, 0.1))


def test_timm_v3_sets_timm_batchnorm_eps():
    ref = randomize_bn(timm.create_model("mobilenetv3_small_100"))
    ours = mobilenets.create_model("mobilenetv3_small_100")
    assert ours.stem.bn.eps == 1e-3  # our V3 default: the paper's / torchvision's
    mobilenets.load_weights(ours, ref.state_dict())
    assert ours.stem.bn.eps == 1e-5
    _assert_same_logits(ref, ours, sizes=[(96, 96)])


def test_features_match_timm_feature_maps():
    """Our stride-level maps equal timm's where the two define the same level."""
    ref = randomize_bn(timm.create_model("mobilenetv4_conv_small", features_only=True)).eval()
    full = randomize_bn(timm.create_model("mobilenetv4_conv_small"))
    ours = mobilenets.create_model("mobilenetv4_conv_small", pretrained=full.state_dict(),
                                   features_only=True).eval()
    ref.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith(("conv_head", "norm_head", "classifier"))})
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        a, b = ref(x), ours(x)
    # timm stops at the last block stage (128 ch); ours ends at the 960 conv of the same stride
    for ra, ob in zip(a[:4], b[:4]):
        torch.testing.assert_close(ra, ob, rtol=1e-4, atol=1e-5)
