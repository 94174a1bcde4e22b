"""`mobilenets export` / `mobilenets bench` and the benchmark machinery behind them
(mobilenets.deploy.bench). Timings are never asserted on, only their bookkeeping."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import mobilenets
from mobilenets.cli import main
from mobilenets.deploy import bench as B

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def test_interleaved_timings_bookkeeping():
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1
        return fn

    res = B.interleaved_timings({"a": make("a"), "b": make("b")}, repeats=25, warmup=2)
    assert set(res) == {"a", "b"}
    assert res["a"]["n"] == res["b"]["n"] == 25
    assert calls == {"a": 27, "b": 27}  # warm-up + timed, nothing more
    for r in res.values():
        assert r["min"] <= r["p25"] <= r["ms"] <= r["p75"]
        assert len(r["round_medians"]) >= 3
    lo, hi = B.ratio_spread(res["a"], res["b"])
    assert 0 < lo <= hi
    with pytest.raises(ValueError, match="at least one callable"):
        B.interleaved_timings({})


def test_quantile():
    assert B.quantile([4, 1, 3, 2], 0.5) == 2.5
    assert B.quantile([5.0], 0.75) == 5.0
    assert B.quantile([0, 10], 0.25) == 2.5


def _deploy_goals():
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "deploy_goals.py"
    spec = importlib.util.spec_from_file_location("deploy_goals", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_rows_ratios_and_roofline():
    pytest.importorskip("timm")
    paths = ["eager", "fused_cl", "fused_onednn", "ort_fp32", "timm_eager", "timm_ort", "tv_eager"]
    rep = B.bench(["mobilenetv3_small_050"], batches=[2], threads=1, size=64, paths=paths, repeats=3,
                  warmup=1)
    rows = {r.path: r for r in rep.rows}
    assert list(rows) == paths
    # torchvision has no 0.5x MobileNetV3-Small: skipped, and says why
    assert rows["tv_eager"].ms is None and "torchvision has no such model" in rows["tv_eager"].note
    for p in paths[:-1]:
        r = rows[p]
        assert r.ms > 0 and r.n == 3
        assert r.vs_timm_ort == pytest.approx(r.ms / rows["timm_ort"].ms)
        assert r.vs_timm_eager == pytest.approx(r.ms / rows["timm_eager"].ms)
        # roofline limit = MACs per image x batch / measured peak
        limit_ms = rep.macs["mobilenetv3_small_050"] * 2 / rep.peak_macs * 1e3
        assert r.vs_roofline == pytest.approx(r.ms / limit_ms)
    assert rows["timm_ort"].vs_timm_ort == pytest.approx(1.0)
    assert rep.macs["mobilenetv3_small_050"] == mobilenets.analysis.profile(
        mobilenets.create_model("mobilenetv3_small_050"), input_size=(64, 64)).macs
    goals = _deploy_goals().goals(rep)  # our targets live in benchmarks/, not in the library
    assert len(goals) == 1 and "best fp32" in goals[0]
    best_fused = min(("fused_cl", "fused_onednn"), key=lambda p: rows[p].ms)  # the goal uses the faster one
    assert f"fused ({best_fused})/timm eager {rows[best_fused].ms / rows['timm_eager'].ms:.2f}" in goals[0]
    md = rep.table(markdown=True).splitlines()
    assert md[0].startswith("| model | batch | MMACs | path | ms") and len(md) == 2 + len(paths)
    json.dumps(rep.as_dict(), default=float)  # serialisable


def test_bench_model_without_references_is_timed_alone():
    rep = B.bench(["mobileformer_26m"], batches=[1], threads=1, size=64,
                  paths=["eager", "fused_cl", "timm_eager", "timm_ort"], repeats=2, warmup=1)
    rows = {r.path: r for r in rep.rows}
    assert rows["eager"].ms > 0 and rows["fused_cl"].ms > 0
    assert rows["eager"].vs_timm_ort is None
    assert rows["timm_eager"].ms is None and "timm has no such model" in rows["timm_eager"].note


def test_a_path_that_computes_something_else_aborts(monkeypatch):
    import sys
    fuse_mod = sys.modules["mobilenets.deploy.fuse"]  # the package attribute is the function
    real = fuse_mod.fuse

    def broken(model, inplace=False):
        model = real(model, inplace=inplace)
        with torch.no_grad():
            model.head.fc.bias.add_(1.0)
        return model

    monkeypatch.setattr(fuse_mod, "fuse", broken)
    with pytest.raises(RuntimeError, match="path fused_cl disagrees with eager"):
        B.build_paths("mobilenetv2_035", 1, 64, 1, paths=["eager", "fused_cl"])


def test_a_failing_path_is_reported_not_fatal(monkeypatch):
    import mobilenets.deploy.onnx_export as ox

    def fail(*a, **k):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(ox, "export_onnx", fail)
    built = B.build_paths("mobilenetv2_035", 1, 64, 1, paths=["eager", "ort_fp32"])
    assert list(built.fns) == ["eager"]
    assert built.notes["ort_fp32"] == "failed: RuntimeError: exporter exploded"
    built.temp_dir.cleanup()


@pytest.mark.parametrize("kwargs,match", [
    ({"paths": ["eager", "tensorrt"]}, r"unknown benchmark path\(s\) \['tensorrt'\]"),
    ({"batches": [0]}, "batch sizes and threads must be >= 1"),
    ({"size": 16}, "size >= 32"),
])
def test_bench_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        B.bench(["mobilenetv2_035"], **kwargs)


# --- CLI ------------------------------------------------------------------------------------------
def test_cli_export_fp32(tmp_path, capsys):
    import onnxruntime as ort
    out = tmp_path / "m.onnx"
    assert main(["export", "mobilenetv3_small_050", "--out", str(out), "--input-size", "64", "80",
                 "--dynamic-batch", "--num-classes", "7"]) == 0
    assert "wrote" in capsys.readouterr().out
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": torch.randn(3, 3, 64, 80).numpy()})[0]
    assert y.shape == (3, 7)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temp file left behind


def test_cli_export_from_weights_file_matches_eager(tmp_path):
    import onnxruntime as ort
    from conftest import randomize_bn
    model = randomize_bn(mobilenets.create_model("mobilenetv2_035", num_classes=5)).eval()
    w = mobilenets.save_weights(model, tmp_path / "w.safetensors")
    out = tmp_path / "m.onnx"
    assert main(["export", str(w), "--model", "mobilenetv2_035", "--out", str(out), "--input-size", "64", "64"]) == 0
    x = torch.randn(1, 3, 64, 64)
    y = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        ref = model(x)
    assert float((torch.from_numpy(y) - ref).abs().max() / ref.abs().max()) < 1e-4


@pytest.mark.parametrize("argv,match", [
    (["export", "mobilenetv2_035", "--out", "OUT", "--int8"], "--int8 needs calibration data: add --calib"),
    (["export", "mobilenetv2_03", "--out", "OUT"], "did you mean mobilenetv2_035"),
    (["export", "mobilenetv2_035", "--out", "OUT", "--opset", "9"], "unsupported opset 9"),
    (["export", "mobilenetv2_035", "--out", "OUT.txt"], "must end in .onnx"),
    (["export", "NOFILE.pth", "--out", "OUT"], "unknown model 'NOFILE.pth'"),
    (["export", "NOFILE.pth", "--out", "OUT"], "no such checkpoint file: NOFILE.pth"),
    (["export", "runs/gone/best.pt", "--out", "OUT"], "no such checkpoint file: runs/gone/best.pt"),
    (["bench", "nonet*"], "no model matches 'nonet\\*'"),
    (["bench", "mobilenetv2_035", "--paths", "eager,warp"], "unknown benchmark path"),
])
def test_cli_bad_input(argv, match, tmp_path, capsys):
    argv = [a.replace("OUT", str(tmp_path / "m.onnx")) if a.startswith("OUT") else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mobilenets {argv[0]}: error:")
    import re
    assert re.search(match, err), err
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_bench_json(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "mobilenetv2_035", "--batch", "1", "--threads", "1", "--size", "64",
                 "--paths", "eager,fused_cl", "--repeats", "2", "--quiet", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ours fused + channels_last" in text and "x roofline" in text
    data = json.loads(out.read_text())
    assert [r["path"] for r in data["rows"]] == ["eager", "fused_cl"]
    assert data["peak_macs_per_s"] > 0 and data["machine"]["threads"] == 1


def test_cli_export_int8(tmp_path, capsys):
    from mobilenets.deploy import int8_op_counts
    out = tmp_path / "q.onnx"
    assert main(["export", "mobilenetv2_035", "--out", str(out), "--int8", "--calib", "fake",
                 "--calib-count", "8", "--input-size", "64", "64"]) == 0
    assert "INT8 (static, QDQ, calibrated on 8 images from fake)" in capsys.readouterr().out
    ops = int8_op_counts(out)
    assert ops["QLinearConv"] > 0  # ONNX Runtime runs the convolutions as INT8


def _calib_folder(root, good=3):
    """``good`` readable images, a file that is not an image and an empty one."""
    from PIL import Image
    root.mkdir()
    for i in range(good):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(root / f"{i}.png")
    (root / "broken.jpg").write_bytes(b"not an image")
    (root / "empty.png").write_bytes(b"")
    return root


@pytest.mark.parametrize("fmt", ["onnx", "executorch"])
def test_cli_int8_reports_the_calibration_really_done(fmt, tmp_path, capsys):
    # a folder of 5 image files, 2 of them unreadable, with the default --calib-count 128: the
    # summary says 3 images were used, which 2 files were skipped, and that 128 were asked for
    if fmt == "executorch":
        pytest.importorskip("executorch")
    calib = _calib_folder(tmp_path / "calib")
    out = tmp_path / ("q.onnx" if fmt == "onnx" else "q.pte")
    assert main(["export", "mobilenetv1_025", "--format", fmt, "--out", str(out), "--int8", "--calib", str(calib),
                 "--input-size", "32", "32", "--num-classes", "10"]) == 0
    text = capsys.readouterr().out
    assert f"calibrated on 3 images from {calib} (2 unreadable image file(s) skipped: " in text
    assert "broken.jpg (" in text and "empty.png (" in text
    assert "128 requested (--calib-count), the folder has 5 image files)" in text
    assert "calibrated on 128" not in text and out.exists()


def test_export_goes_through_the_models_task(tmp_path, capsys):
    """`mobilenets export` asks the model's Task (no per-task branch): its export module, its
    formats, its checks. An untrained registry detector (every score tied at detections_per_img)
    exports: the verification compares the detections above the tie."""
    from mobilenets.train.task import get_task

    det = get_task("detection")
    model = mobilenets.create_model("ssdlite320_mobilenetv1_025").eval()
    with torch.no_grad():
        boxes, labels, scores = det.export_module(model)(torch.rand(3, 320, 320))
    assert boxes.shape[-1] == 4 and labels.dtype == torch.int64 and scores.shape == labels.shape
    assert det.export_formats == ("onnx", "executorch", "tflite") and get_task("classify").export_module(model) is model
    # INT8 detectors: the SSD's network for the mobile runtimes (decode + NMS on the host), not ONNX
    with pytest.raises(ValueError, match=r"--int8 ONNX exports are not for detectors: they export ONNX in fp32 "
                                         r"\(BatchNorm folded\), or INT8 with --format executorch\|tflite"):
        det.check_export("onnx", True, False)
    assert main(["export", "ssdlite320_mobilenetv1_025", "--out", str(tmp_path / "d.onnx")]) == 0
    out = capsys.readouterr().out
    assert "decode + NMS in the graph, input image 3x320x320 in [0, 1]" in out and "normalized with" not in out
    assert main(["export", "lraspp_mobilenetv3_small_050", "--out", str(tmp_path / "s.onnx"), "--int8",
                 "--calib", "fake"]) == 2
    assert "--int8 ONNX exports are not for segmenters" in capsys.readouterr().err
    assert main(["export", "lraspp_mobilenetv3_small_050", "--out", str(tmp_path / "s.onnx"), "--input-size", "96"]) == 0
    out = capsys.readouterr().out
    assert "input 1x3x96x96; opset 17; checked with ONNX Runtime: max diff" in out and "normalized with mean (0.485" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.onnx", "s.onnx"]
