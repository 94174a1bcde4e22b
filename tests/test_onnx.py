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
                                  "mobileformer_26m"])
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
