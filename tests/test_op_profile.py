"""Per-op profiles of exported files in their runtimes (mobilenets.deploy.op_profile and
`mobilenets profile FILE`): XNNPACK's operator timings from ExecuTorch's event tracer; in LiteRT
the operators and those its XNNPACK delegate leaves to LiteRT's own kernels."""

import importlib.util

import pytest
import torch

import mobilenets
from conftest import randomize_bn
from mobilenets.cli import main
from mobilenets.deploy.op_profile import format_op_profile, op_profile


def _have(mod):
    return importlib.util.find_spec(mod) is not None


needs_et = pytest.mark.skipif(not _have("executorch"), reason="executorch not installed (mobilenets[mobile])")
needs_lt = pytest.mark.skipif(not (_have("litert_torch") and _have("ai_edge_litert")),
                              reason="litert-torch / ai-edge-litert not installed (mobilenets[mobile])")


def _small():
    return randomize_bn(mobilenets.create_model("mobilenetv1_025", num_classes=10), calib_size=(32, 32)).eval()


@pytest.fixture(scope="module")
def pte(tmp_path_factory):
    if not _have("executorch"):
        pytest.skip("executorch not installed")
    from mobilenets.deploy import export_executorch
    return export_executorch(_small(), tmp_path_factory.mktemp("pte") / "m.pte", input_size=(32, 32)).path


@needs_et
def test_pte_profile_times_every_xnnpack_operator(pte):
    prof = op_profile(pte, runs=3, threads=1)
    assert prof.runtime == "executorch" and prof.total_ms > 0 and prof.outside == {}
    kinds = {op["kind"] for op in prof.ops}
    # MobileNetV1 0.25: 14 convolutions (stem, 13 depthwise + 13 pointwise), a pool, the classifier
    assert any(k.startswith("Convolution (NHWC, F32)") for k in kinds), kinds
    assert sum("DWConv" in k for k in (op["kind"] for op in prof.ops)) == 13
    assert sum(prof.counts.values()) == len(prof.ops) and all(op["ms"] >= 0 for op in prof.ops)
    assert sum(op["ms"] for op in prof.ops) <= prof.total_ms * 1.5  # the operators are inside the call
    table = format_op_profile(prof, top=3)
    assert "slowest 3:" in table and "ms per call" in table
    assert prof.to_dict()["by_kind"][0]["ms"] >= prof.to_dict()["by_kind"][-1]["ms"]


class _Max(torch.nn.Module):
    """Two int8 convs and an elementwise maximum: LiteRT's XNNPACK delegate takes no int8 MAXIMUM."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c = torch.nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return self.c(torch.maximum(self.a(x), self.b(x))).mean((2, 3))


@needs_lt
def test_tflite_profile_names_what_runs_outside_xnnpack(tmp_path):
    from mobilenets.deploy import export_tflite
    ok = export_tflite(_small(), tmp_path / "q.tflite", input_size=(32, 32), calib="fake", calib_count=4)
    prof = op_profile(ok, runs=2, threads=1)
    assert prof.runtime == "litert" and prof.total_ms > 0
    assert prof.outside == {} and prof.partitions == 1
    assert prof.counts.get("DEPTHWISE_CONV_2D (INT8)") == 13 and all(op["ms"] is None for op in prof.ops)
    torch.manual_seed(0)
    split = export_tflite(_Max().eval(), tmp_path / "m.tflite", input_size=(32, 32), calib="fake", calib_count=4)
    prof = op_profile(split, runs=2, threads=1)
    assert prof.outside == {"MAXIMUM (INT8)": 1} and prof.partitions == 2, (prof.outside, prof.partitions)
    assert "outside XNNPACK: 1 operator(s), 2 delegated partition(s): MAXIMUM (INT8) x1" in format_op_profile(prof)


def test_bad_files_are_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"per-op profiles are for ExecuTorch \.pte and LiteRT \.tflite.*'\.onnx'"):
        op_profile(tmp_path / "m.onnx")
    with pytest.raises(FileNotFoundError, match="no such file"):
        op_profile(tmp_path / "m.pte")
    with pytest.raises(ValueError, match="expected an exported file"):
        op_profile(tmp_path / "m.bin")


@needs_et
def test_cli_profile_file(pte, capsys):
    assert main(["profile", str(pte), "--runs", "2", "--threads", "1", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "executorch, 1 threads, median of 2 runs" in out and "slowest 2:" in out
    png = pte.parent / "ops.png"
    assert main(["profile", str(pte), "--runs", "2", "--threads", "1", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {png}" in capsys.readouterr().out
    assert main(["profile", str(pte), "--input-size", "64"]) == 2
    assert "--input-size is for a registry model's analytic profile" in capsys.readouterr().err
    assert main(["profile", str(pte).replace(".pte", ".onnx")]) == 2
    assert "per-op profiles are for ExecuTorch .pte" in capsys.readouterr().err


def test_plot_op_profile_times_and_counts(tmp_path):
    pytest.importorskip("matplotlib")
    from mobilenets.analysis.plots import plot_op_profile
    from mobilenets.deploy.op_profile import OpProfile
    ops = [{"name": f"Convolution (NHWC, QC8) DWConv #{i}", "kind": "Convolution (NHWC, QC8) DWConv", "ms": 0.1}
           for i in range(3)] + [{"name": "Convert (NC) #1", "kind": "Convert (NC)", "ms": 0.05}]
    timed = OpProfile("m.pte", "executorch", 5, 2, 0.5, ops, {"Convolution (NHWC, QC8) DWConv": 3, "Convert (NC)": 1})
    assert plot_op_profile(timed, tmp_path / "t.png").stat().st_size > 1000
    counted = OpProfile("m.tflite", "litert", 5, 2, 0.5, [{"name": "MAXIMUM (INT8) #0", "kind": "MAXIMUM (INT8)", "ms": None}],
                        {"MAXIMUM (INT8)": 1}, {"MAXIMUM (INT8)": 1}, 2)
    assert plot_op_profile(counted, tmp_path / "c.png").stat().st_size > 1000
