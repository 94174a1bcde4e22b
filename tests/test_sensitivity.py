"""Per-layer INT8 sensitivity and mixed precision (issue 26, item 2): the ranking is reproducible,
a mixed-precision export keeps the chosen layers float (read back from the file) and still lowers
fully, and ``mobilenets sensitivity`` writes its report."""

import json

import pytest
import torch

import mobilenets
from conftest import randomize_bn
from mobilenets.cli import main

pytest.importorskip("executorch.exir")


def _model(x):
    return randomize_bn(mobilenets.create_model("mobilenetv4_conv_small", num_classes=10), calib=x).eval()


def test_ranking_is_reproducible_and_sorted():
    from mobilenets.deploy.mobile import prepare
    from mobilenets.deploy.sensitivity import layer_sensitivity, quantizable_layers

    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model = _model(x)
    layers = quantizable_layers(prepare(model, target="executorch")[1])
    assert layers[0].startswith("stem") and len(layers) > 20
    pick = [layers[0], layers[len(layers) // 2], layers[-1]]
    a = layer_sensitivity(model, "executorch", x, (32, 32), layers=pick, progress=False)
    b = layer_sensitivity(model, "executorch", x, (32, 32), layers=pick, progress=False)
    assert [r.layer for r in a] == [r.layer for r in b] and [r.rel_rms for r in a] == [r.rel_rms for r in b]
    assert [r.rel_rms for r in a] == sorted((r.rel_rms for r in a), reverse=True)
    assert all(r.rel_rms > 0 for r in a) and {r.layer for r in a} == set(pick)
    with pytest.raises(ValueError, match="no quantizable layer 'stem.conv_x'"):
        layer_sensitivity(model, "executorch", x, (32, 32), layers=["stem.conv_x"], progress=False)


@pytest.mark.parametrize("fmt", [pytest.param("executorch", marks=pytest.mark.slow), "tflite"])
def test_mixed_precision_keeps_the_layers_float_and_lowers_fully(fmt, tmp_path):
    from mobilenets.deploy.mobile import export_mobile, prepare
    from mobilenets.deploy.runtimes import runtime_for
    from mobilenets.deploy.sensitivity import quantizable_layers

    if fmt == "tflite":
        pytest.importorskip("litert_torch")
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model = _model(x)
    rt = runtime_for(fmt)
    layers = quantizable_layers(prepare(model, target=rt.forms_for(int8=True))[1])
    keep = (layers[0], layers[-1])       # the stem conv and the classifier
    base = export_mobile(rt, model, tmp_path / f"q{rt.suffix}", (32, 32), calib=x)
    mixed = export_mobile(rt, model, tmp_path / f"m{rt.suffix}", (32, 32), calib=x, float_layers=keep)
    assert base.fully_lowered and mixed.fully_lowered
    assert mixed.agreement is not None and mixed.max_rel_diff is not None
    if fmt == "tflite":
        from mobilenets.deploy.litert_export import tflite_weight_types

        float_ops = lambda path: sum(n for (op, t), n in tflite_weight_types(path).items() if t == "FLOAT32")  # noqa: E731
        assert float_ops(base.path) == 0
        assert float_ops(mixed.path) == 2, tflite_weight_types(mixed.path)   # read back: exactly those two
    else:
        # the .pte's XNNPACK payload is opaque here: read the quantized graph that was lowered
        # (the runtime's quantize with the same float layers): the convolutions / linears whose
        # weight is not dequantized from int8 are float
        def float_weighted(layers_kept):
            form = prepare(model, target=rt.forms)[1]
            net, _ = rt.quantize(form, x[:1], x, layers_kept) if layers_kept else rt.quantize(form, x[:1], x)
            ops = ("conv2d", "linear")
            return sum(1 for n in net.graph.nodes if n.op == "call_function" and any(o in str(n.target) for o in ops)
                       and "dequantize" not in str(getattr(n.args[1], "target", "")))
        assert float_weighted(()) == 0
        assert float_weighted(keep) == 2
    with pytest.raises(ValueError, match="float_layers: no quantizable layer 'nope'"):
        export_mobile(rt, model, tmp_path / f"bad{rt.suffix}", (32, 32), calib=x, float_layers=("nope",))
    assert not (tmp_path / f"bad{rt.suffix}").exists()


@pytest.mark.slow
def test_cli_sensitivity_writes_the_report(tmp_path, capsys):
    out = tmp_path / "sens"
    assert main(["sensitivity", "mobilenetv1_025", "--format", "executorch", "--input-size", "32",
                 "--calib", "fake", "--calib-count", "8", "--keep-float", "0", "1", "--seconds", "0.2",
                 "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "sensitivity.json").read_text())
    assert [v["keep_float"] for v in res["mixed"]] == [0, 1]
    assert res["mixed"][1]["layers"] == [res["ranking"][0]["layer"]]
    assert all(v["ms"] > 0 for v in res["mixed"]) and (out / "sensitivity.png").stat().st_size > 5000
    assert "K most sensitive layers kept float" in (out / "sensitivity.md").read_text()
    assert main(["sensitivity", "mobilenetv1_025", "--format", "executorch", "--keep-float", "-1",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "--keep-float: expected counts >= 0, got [-1]" in capsys.readouterr().err
