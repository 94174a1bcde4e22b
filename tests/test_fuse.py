"""BatchNorm folding: the fused model computes the same function, with fewer layers."""

import copy

import pytest
import torch
import torch.nn as nn

import mobilenets
from mobilenets.deploy import fold_bn_after, fold_bn_before, fuse
from conftest import randomize_bn

_BN = nn.modules.batchnorm._BatchNorm


def _rel(ref: torch.Tensor, other: torch.Tensor) -> float:
    return float((ref - other).abs().max() / ref.abs().max())


@pytest.mark.parametrize("name", mobilenets.list_models("mobilenetv*"))
def test_fuse_equals_unfused(name):
    torch.manual_seed(0)
    model = randomize_bn(mobilenets.create_model(name)).eval()
    fused = fuse(model)
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        a, b = model(x), fused(x)
        # the folding is exact: in float64 (folded weights computed in float64 too) the fused
        # model is the same function to rounding
        model64 = copy.deepcopy(model).double()
        truth = model64(x.double())
        assert _rel(truth, fuse(model64)(x.double())) <= 1e-12
    # and in fp32 it costs no precision: its error against that truth stays within twice the
    # unfused model's own fp32 error. (A direct fp32 fused-vs-unfused bound is two fp32
    # errors added: ~1e-5 for a 28-layer MobileNetV1 on well-conditioned statistics.)
    assert _rel(truth, b.double()) <= 2 * _rel(truth, a.double()) + 1e-6
    assert _rel(a, b) <= 1e-4
    left = [n for n, m in fused.named_modules() if isinstance(m, _BN)]
    # only the MQA input norms that also feed a padded depthwise (K/V downsampling) remain
    assert all(n.endswith(".norm") for n in left), left
    assert not any(isinstance(m, nn.Dropout) for m in fused.modules())
    assert any(isinstance(m, _BN) for m in model.modules())  # the original is untouched


def test_model_fuse_method_in_place():
    model = randomize_bn(mobilenets.create_model("mobilenetv3_small_050")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        assert model.fuse() is model
        torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-6)
    assert not any(isinstance(m, _BN) for m in model.modules())


def test_fold_helpers_depthwise_and_preceding():
    torch.manual_seed(0)
    dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
    bn = randomize_bn(nn.Sequential(nn.BatchNorm2d(4)))[0].eval()
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        ref = bn(dw(x))
        fold_bn_after(dw, bn)
        torch.testing.assert_close(dw(x), ref)
        pw = nn.Conv2d(4, 6, 1, bias=False)
        ref = pw(bn(x))
        fold_bn_before(bn, pw)
        torch.testing.assert_close(pw(x), ref)
    with pytest.raises(ValueError, match="1x1"):
        fold_bn_before(bn, nn.Conv2d(4, 4, 3, padding=1))
