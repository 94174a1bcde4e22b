"""ONNX export verified against eager with ONNX Runtime, one model per family."""

import pytest
import torch

import mobilenets
from mobilenets.deploy import export_onnx
from conftest import randomize_bn

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.mark.parametrize("name", ["mobilenetv1_025", "mobilenetv2_050", "mobilenetv3_small_100",
                                  "mobilenetv4_conv_small_050", "mobilenetv4_hybrid_medium_075",
                                  "mobileformer_26m", "tf_mobilenetv3_small_075", "mobilenet_edgetpu_v2_xs"])
def test_export_matches_eager(name, tmp_path):
    model = randomize_bn(mobilenets.create_model(name)).eval()
    path = export_onnx(model, tmp_path / "m.onnx", input_size=(96, 128), dynamic_batch=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 96, 128)  # another batch size than the traced one
    (y,) = sess.run(None, {"input": x.numpy()})
    with torch.no_grad():
        ref = model(x).numpy()
    assert abs(y - ref).max() <= 1e-4 * abs(ref).max()


def test_export_features_only(tmp_path):
    model = mobilenets.create_model("mobilenetv3_small_050", features_only=True, out_indices=(2, 4))
    path = export_onnx(model, tmp_path / "f.onnx", input_size=(64, 64))
    outs = ort.InferenceSession(str(path)).run(None, {"input": torch.randn(1, 3, 64, 64).numpy()})
    assert [o.shape[1] for o in outs] == model.width_list


def test_bad_arguments_and_atomic_write(tmp_path, monkeypatch):
    model = mobilenets.create_model("mobilenetv1_025")
    with pytest.raises(ValueError, match="unsupported opset 7"):
        export_onnx(model, tmp_path / "m.onnx", opset=7)
    with pytest.raises(ValueError, match="H, W >= 32"):
        export_onnx(model, tmp_path / "m.onnx", input_size=(16, 16))
    with pytest.raises(ValueError, match=".onnx"):
        export_onnx(model, tmp_path / "m.pt")

    def boom(*a, **k):
        raise RuntimeError("exporter crashed")
    monkeypatch.setattr(torch.onnx, "export", boom)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        export_onnx(model, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_attention_exports_without_needless_layout_ops(tmp_path):
    """Mobile MQA exports channel-major: one Transpose per attention block (the shared key),
    the shared key / value broadcast inside MatMul (no Expand), heads back to channels by
    Reshape; the eager SDPA path (token-major, expanded k / v) would export 3 transposes and
    2 Expands per block. Outputs still match eager (test_export_matches_eager)."""
    import onnx

    from mobilenets.blocks import MobileMQA

    model = mobilenets.create_model("mobilenetv4_hybrid_medium_075").eval()
    blocks = sum(isinstance(m, MobileMQA) for m in model.modules())
    assert blocks > 0
    path = export_onnx(model, tmp_path / "h.onnx", input_size=(96, 96))
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("Transpose") == blocks and "Expand" not in ops
    assert ops.count("Softmax") == blocks and ops.count("MatMul") == 2 * blocks


def test_onnx_runtime_is_a_runtime_of_the_one_driver(tmp_path):
    """ONNX Runtime goes through the same export driver as ExecuTorch and LiteRT: fp32 checked
    against eager on every output, INT8 (ONNX Runtime's QDQ quantizer on the fp32 file) checked by
    running the file (agreement with fp32 measured), the ModelInfo in the file's metadata."""
    from mobilenets.deploy import Runtime, export_mobile, ort_session, read_model_info
    from mobilenets.deploy.onnx_export import OnnxRuntime

    model = mobilenets.create_model("mobilenetv2_035", num_classes=7).eval()
    rt = OnnxRuntime(opset=17)
    assert isinstance(rt, Runtime) and rt.suffix == ".onnx"
    fp32 = export_mobile(rt, model, tmp_path / "m.onnx", (64, 64))
    assert fp32.precision == "fp32" and fp32.max_rel_diff <= 1e-4 and fp32.ops["Conv"] > 10
    assert "checked with ONNX Runtime" in fp32.summary() and "every op in ONNX Runtime" in fp32.summary()
    images = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    q = export_mobile(rt, model, tmp_path / "q.onnx", (64, 64), calib=images)
    assert q.precision == "int8" and q.agreement is not None and q.agreement_images == 8
    assert q.ops.get("QuantizeLinear", 0) > 0 and q.ops.get("DequantizeLinear", 0) > 0  # the file's ops
    info = read_model_info(q.path)
    assert info.name == "mobilenetv2_035" and info.num_classes == 7 and info.input_size == (3, 64, 64)
    # features_only: every map an output, each checked
    feats = mobilenets.create_model("mobilenetv2_035", features_only=True).eval()
    res = export_mobile(rt, feats, tmp_path / "f.onnx", (64, 64))
    assert len(ort_session(res.path).get_outputs()) == len(feats(torch.zeros(1, 3, 64, 64)))
    with pytest.raises(ValueError, match="unsupported opset 9"):
        export_mobile(OnnxRuntime(opset=9), model, tmp_path / "x.onnx", (64, 64))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.onnx", "m.onnx", "q.onnx"]
