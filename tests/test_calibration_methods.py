"""INT8 calibration methods (deploy/observers.py, ``--calib-method``): how each activation's range
is chosen from the calibration images, for the PT2E runtimes and ONNX Runtime."""

import pytest
import torch

import mobilenets
from conftest import randomize_bn
from mobilenets.cli import main
from mobilenets.deploy.observers import PT2E_CALIB_METHODS, percentile_bounds, percentile_observer_class

pytest.importorskip("torchao")


def test_percentile_bounds_clip_the_outliers_minmax_keeps():
    """A histogram of 100,000 standard normal values and ten at +-50: the 99.99 percentile bounds
    land near the normal's (+-3.9) where min / max are +-50; a histogram with nothing to clip
    keeps its range, and 0 always stays inside."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(100_000, generator=g), torch.full((5,), 50.0), torch.full((5,), -50.0)])
    hist = torch.histc(x, bins=2048, min=-50, max=50)
    lo, hi = percentile_bounds(hist, torch.tensor(-50.0), torch.tensor(50.0))
    assert -4.5 < float(lo) < -3.3 and 3.3 < float(hi) < 4.5, (lo, hi)
    flat = torch.ones(100)
    lo, hi = percentile_bounds(flat, torch.tensor(0.5), torch.tensor(2.0), percentile=100.0)
    assert float(lo) == 0.0 and float(hi) == pytest.approx(2.0)


def _observers(quantizer, model):
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    gm = torch.export.export(model, (torch.randn(1, 3, 32, 32),)).module()
    prepared = prepare_pt2e(gm, quantizer)
    return {type(m).__name__ for n, m in prepared.named_modules() if n.startswith("activation_post_process")}


@pytest.mark.parametrize("method, observer", [("mse", "HistogramObserver"), ("minmax", "MinMaxObserver"),
                                              ("percentile", "PercentileObserver"),
                                              ("average", "MovingAverageMinMaxObserver")])
def test_the_method_sets_the_activation_observers(method, observer):
    pytest.importorskip("executorch.exir")
    from mobilenets.deploy.executorch_export import xnnpack_quantizer
    from mobilenets.deploy.observers import with_calib_method

    model = mobilenets.create_model("mobilenetv1_025", num_classes=4).eval()
    found = _observers(with_calib_method(xnnpack_quantizer(), method), model)
    assert observer in found
    weights = {"PerChannelMinMaxObserver"}  # weights keep per-channel min / max
    assert found - weights == {observer}, found
    with pytest.raises(ValueError, match="calib_method: expected one of mse, minmax, percentile, average for ExecuTorch / "
                                         "LiteRT, got 'entropy'"):
        with_calib_method(xnnpack_quantizer(), "entropy")


@pytest.mark.slow  # three INT8 ExecuTorch exports
def test_each_method_exports_and_the_ranges_differ(tmp_path):
    """ExecuTorch INT8 with each method: every file lowers fully and runs, and the methods really
    choose different ranges (the files' logits differ). Which is more accurate depends on the
    network and data (benchmarks/INT8.md measures it on trained ones)."""
    pytest.importorskip("executorch.exir")
    from mobilenets.deploy import export_executorch, pte_logits

    model = randomize_bn(mobilenets.create_model("mobilenetv1_025", num_classes=10), calib_size=(32, 32)).eval()
    g = torch.Generator().manual_seed(1)
    calib = torch.randn(32, 3, 32, 32, generator=g)
    calib[:2] *= 8  # a few extreme images: min / max follows them, the percentile clips them
    x = torch.randn(16, 3, 32, 32, generator=g)
    logits = {}
    for method in PT2E_CALIB_METHODS:
        res = export_executorch(model, tmp_path / f"{method}.pte", input_size=(32, 32), calib=calib,
                                calib_method=method)
        assert res.precision == "int8" and res.fully_lowered
        logits[method] = pte_logits(res, x)
    assert not torch.equal(logits["minmax"], logits["percentile"])
    assert not torch.equal(logits["mse"], logits["minmax"]) and not torch.equal(logits["mse"], logits["percentile"])
    assert percentile_observer_class().__name__ == "PercentileObserver"


def test_cli_calib_method(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = str(tmp_path / "q.onnx")
    assert main(["export", "mobilenetv1_025", "--num-classes", "4", "--input-size", "32", "--int8", "--calib", "fake",
                 "--calib-count", "4", "--calib-method", "percentile", "--out", out]) == 0
    assert "percentile ranges" in capsys.readouterr().out
    assert main(["export", "mobilenetv1_025", "--int8", "--calib", "fake", "--calib-method", "mse", "--out", out]) == 2
    assert "--calib-method: --format onnx takes minmax, entropy, percentile; got 'mse'" in capsys.readouterr().err
    assert main(["export", "mobilenetv1_025", "--format", "executorch", "--int8", "--calib", "fake",
                 "--calib-method", "percentil", "--out", str(tmp_path / "q.pte")]) == 2
    assert "takes mse, minmax, percentile, average; got 'percentil' (did you mean percentile?)" in \
        capsys.readouterr().err
    assert main(["export", "mobilenetv1_025", "--calib-method", "minmax", "--out", out]) == 2
    assert "--calib-method is for --int8 exports" in capsys.readouterr().err


def test_average_keeps_the_signal_one_extreme_image_would_erase():
    """One calibration image whose activations are ~300x the others' (as some digit-clutter images
    are for a MobileNetV3-Large's SE layers): min / max, the MSE search and the percentile all
    stretch the range over it and round the other images' activations to a few steps; ``average``
    (each image moves the range by 1 %) keeps them. Measured on the PT2E reference graph."""
    pytest.importorskip("executorch.exir")
    from mobilenets.deploy.executorch_export import xnnpack_quantizer
    from mobilenets.deploy.mobile import pt2e_quantize
    from mobilenets.deploy.observers import with_calib_method

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(16, 10)).eval()
    g = torch.Generator().manual_seed(0)
    calib = torch.randn(64, 3, 16, 16, generator=g)
    calib[40] *= 300  # one extreme image
    x = torch.randn(32, 3, 16, 16, generator=g)
    with torch.no_grad():
        ref = net(x)
    err = {}
    for method in PT2E_CALIB_METHODS:
        q = pt2e_quantize(net, x[:1], calib, with_calib_method(xnnpack_quantizer(), method))
        with torch.no_grad():
            out = torch.cat([q(x[i:i + 1]) for i in range(len(x))])
        err[method] = float((out - ref).abs().mean() / ref.abs().mean())
    assert err["average"] < 0.05, err
    assert min(err[m] for m in ("mse", "minmax", "percentile")) > 4 * err["average"], err
