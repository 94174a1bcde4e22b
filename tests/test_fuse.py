"""BatchNorm folding: the fused model computes the same function, with fewer layers."""

import pytest
import torch
import torch.nn as nn

import mobilenets
from mobilenets.deploy import fold_bn_after, fold_bn_before, fuse
from conftest import assert_same_function, randomize_bn

_BN = nn.modules.batchnorm._BatchNorm


# MobileNetV5 has no BatchNorm to fold (RMSNorm) and 294 M parameters: tests/test_mobilenetv5.py
# checks that fuse keeps its function, at width 0.25
@pytest.mark.parametrize("name", [n for n in mobilenets.list_models("mobilenetv*") + mobilenets.list_models("tf_mobilenetv3*")
                                  + mobilenets.list_models("mobilenet_edgetpu*")
                                  if mobilenets.get_entry(n).family != "mobilenetv5"])
def test_fuse_equals_unfused(name):
    torch.manual_seed(0)
    model = randomize_bn(mobilenets.create_model(name)).eval()
    fused = assert_same_function(model, fuse, torch.randn(2, 3, 96, 80))
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
