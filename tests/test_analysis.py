"""mobilenets.analysis: MAC / byte counting, roofline, Pareto front, calibration helpers, CLI."""

import argparse
import json
import math

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import mobilenets
from mobilenets.analysis import (ACCURACY, DTYPE_BYTES, calibrate, pareto_front, profile,
                                 roofline, spearman, sweep)
from mobilenets.cli.analysis import add_commands, macs_at_224
from mobilenets.blocks import FusedIB, InvertedResidual, UniversalInvertedBottleneck
from mobilenets.blocks.attention import MultiQueryAttention2d

F4 = 4  # fp32 bytes per element


def with_chans(m: nn.Module, c: int) -> nn.Module:
    m.in_chans = c  # profile() builds a zero input of (1, in_chans, H, W)
    return m


def rec(p, name):
    hits = [r for r in p.layers if r.name == name]
    assert len(hits) == 1, [r.name for r in p.layers]
    return hits[0]


# --- agreement with torch's FlopCounterMode and with published figures --------------------
@pytest.mark.parametrize("name", ["mobilenetv2_100", "mobilenetv3_large_100",
                                  "mobilenetv4_hybrid_medium"])
def test_macs_match_flop_counter(name):
    model = mobilenets.create_model(name).eval()
    p = profile(model, (160, 160))
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 3, 160, 160))
    counts = {str(k): v for k, v in fc.get_flop_counts()["Global"].items()}
    conv_ref = counts.get("aten.convolution", 0) / 2
    lin_ref = (counts.get("aten.addmm", 0) + counts.get("aten.mm", 0)) / 2
    kinds = p.by_kind()
    conv = kinds["conv"]["macs"] + kinds["dwconv"]["macs"]
    assert conv == pytest.approx(conv_ref, rel=0.01)
    assert kinds["linear"]["macs"] == pytest.approx(lin_ref, rel=0.01)
    assert p.macs == pytest.approx(fc.get_total_flops() / 2, rel=0.01)
    if "hybrid" in name:  # attention = the Q.K and A.V batched matmuls FlopCounter sees
        assert kinds["attention"]["macs"] == pytest.approx(counts["aten.bmm"] / 2, rel=0.01)


@pytest.mark.parametrize("name,published", [
    ("mobilenetv1_100", 569e6), ("mobilenetv2_100", 300e6), ("mobilenetv3_large_100", 219e6),
    ("mobilenetv3_small_100", 56e6), ("mobilenetv4_conv_small", 0.19e9)])
def test_published_macs(name, published):
    assert profile(name).macs == pytest.approx(published, rel=0.03)


def test_every_registered_model_profiles():
    for name in mobilenets.list_models(task="classification"):
        p = profile(name, (64, 64))
        assert p.macs > 0 and p.bytes > 0 and p.layers, name
        assert {r.kind for r in p.layers} <= {"conv", "dwconv", "linear", "matmul", "attention"}
        assert p.model_params == mobilenets.count_params(mobilenets.create_model(name))
        if "hybrid" in name:
            assert any(r.kind == "attention" for r in p.layers), name


# --- hand-computed MACs and bytes per block kind (32x32 inputs) --------------------------
def test_conv_by_hand():
    p = profile(nn.Conv2d(3, 8, 3, padding=1, bias=False), (32, 32))
    (r,) = p.layers
    assert (r.kind, r.out_shape) == ("conv", (1, 8, 32, 32))
    assert r.macs == 8 * 32 * 32 * 3 * 9
    assert r.params == 8 * 3 * 9 and r.weight_bytes == 8 * 3 * 9 * F4
    assert r.input_bytes == 3 * 32 * 32 * F4 and r.output_bytes == 8 * 32 * 32 * F4
    assert r.bytes == r.weight_bytes + r.act_bytes == p.bytes


def test_depthwise_by_hand():
    p = profile(with_chans(nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=True), 8), 32)
    (r,) = p.layers
    assert r.kind == "dwconv" and r.out_shape == (1, 8, 16, 16)
    assert r.macs == 8 * 16 * 16 * 9
    assert r.params == 8 * 9 + 8  # weight + bias
    assert r.weight_bytes == (8 * 9 + 8) * F4
    assert r.act_bytes == (8 * 32 * 32 + 8 * 16 * 16) * F4


class PoolLinear(nn.Module):
    in_chans = 3

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 10)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


def test_linear_by_hand():
    p = profile(PoolLinear(), (32, 32), batch_size=2)
    (r,) = p.layers
    assert (r.name, r.kind, r.out_shape) == ("fc", "linear", (2, 10))
    assert r.macs == 2 * 3 * 10
    assert r.params == 40 and r.weight_bytes == 40 * F4  # weights read once, not per sample
    assert r.input_bytes == 2 * 3 * F4 and r.output_bytes == 2 * 10 * F4


def test_inverted_residual_by_hand():
    blk = with_chans(InvertedResidual(8, 8, 16, 3, 1), 8)
    p = profile(blk, (32, 32))
    hw = 32 * 32
    assert [r.name for r in p.layers] == ["expand.conv", "dw.conv", "project.conv"]
    assert [r.kind for r in p.layers] == ["conv", "dwconv", "conv"]
    assert [r.macs for r in p.layers] == [hw * 8 * 16, hw * 16 * 9, hw * 16 * 8]
    assert p.weight_bytes == (8 * 16 + 16 * 9 + 16 * 8) * F4  # BN folds: not counted
    assert p.act_bytes == ((8 + 16) + (16 + 16) + (16 + 8)) * hw * F4


def test_uib_extradw_by_hand():
    blk = with_chans(UniversalInvertedBottleneck(8, 16, 32, start_k=3, mid_k=5, stride=2), 8)
    p = profile(blk, (32, 32))
    assert [r.name for r in p.layers] == ["dw_start.conv", "expand.conv", "dw_mid.conv",
                                          "project.conv"]
    assert [r.macs for r in p.layers] == [32 * 32 * 8 * 9, 32 * 32 * 32 * 8, 16 * 16 * 32 * 25,
                                          16 * 16 * 16 * 32]
    assert rec(p, "dw_mid.conv").act_bytes == (32 * 32 * 32 + 32 * 16 * 16) * F4
    assert p.params == 8 * 9 + 8 * 32 + 32 * 25 + 32 * 16


def test_fused_ib_by_hand():
    p = profile(with_chans(FusedIB(8, 16, 32, 3, stride=2), 8), (32, 32))
    e, pr = rec(p, "expand.conv"), rec(p, "project.conv")
    assert e.kind == "conv" and e.macs == 16 * 16 * 32 * 8 * 9
    assert pr.macs == 16 * 16 * 16 * 32
    assert e.act_bytes == (8 * 32 * 32 + 32 * 16 * 16) * F4
    assert e.weight_bytes == 32 * 8 * 9 * F4


def test_mqa_kv_stride2_by_hand():
    attn = with_chans(MultiQueryAttention2d(16, num_heads=2, key_dim=8, kv_stride=2), 16)
    p = profile(attn, (32, 32))
    n, m = 32 * 32, 16 * 16  # queries, keys/values after the stride-2 downsampling
    assert rec(p, "q").macs == n * 16 * 16
    assert rec(p, "k_down.conv").kind == "dwconv" and rec(p, "k_down.conv").macs == m * 16 * 9
    assert rec(p, "k").macs == m * 16 * 8 and rec(p, "v").macs == m * 16 * 8
    a = rec(p, "<root>")
    assert a.kind == "attention"
    assert a.macs == 2 * n * m * (8 + 8)  # Q.K^T + A.V for 2 heads
    # one shared K/V head, counted as stored (not per query head); scores stay on chip
    assert a.input_bytes == (2 * n * 8 + m * 8 + m * 8) * F4
    assert a.output_bytes == 2 * n * 8 * F4 and a.weight_bytes == 0
    assert rec(p, "proj").macs == n * 16 * 16


class MatmulMixer(nn.Module):
    """Mobile-Former-style token attention written with plain @, torch.matmul and einsum."""
    in_chans = 8

    def __init__(self):
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(6, 8))

    def forward(self, x):
        b, c, h, w = x.shape
        f = x.flatten(2)                                        # (B, C, HW)
        t = self.tokens.expand(b, -1, -1)                       # (B, M, C)
        a = (t @ f).softmax(-1)                                 # (B, M, HW): M*C*HW
        t = torch.matmul(a, f.transpose(1, 2))                  # (B, M, C):  M*HW*C
        q = x.reshape(b, 2, c // 2, h * w).transpose(-1, -2)     # (B, 2, HW, C/2)
        k = t.reshape(b, 6, 2, c // 2).transpose(1, 2)           # (B, 2, M, C/2)
        s = torch.einsum("bhnd,bhmd->bhnm", q, k)                # 2*HW*M*C/2
        return s


def test_plain_matmul_counts():
    p = profile(MatmulMixer(), (32, 32))
    hw, m, c = 32 * 32, 6, 8
    kinds = p.by_kind()
    assert kinds["matmul"]["macs"] + kinds.get("linear", {"macs": 0})["macs"] == \
        m * c * hw + m * hw * c + 2 * hw * m * (c // 2)
    assert len(p.layers) == 3
    assert {r.name.split("#")[0] for r in p.layers} == {"<root>"}
    assert [r.name for r in p.layers] == ["<root>", "<root>#2", "<root>#3"]


def test_dtype_changes_bytes_not_macs():
    ps = {d: profile("mobilenetv3_small_100", (96, 96), dtype=d) for d in ("fp32", "fp16", "int8")}
    assert ps["fp32"].macs == ps["fp16"].macs == ps["int8"].macs
    assert ps["fp16"].bytes * 2 == ps["fp32"].bytes == ps["int8"].bytes * 4
    assert profile("mobilenetv3_small_100", (96, 96), dtype=torch.bfloat16).bytes == ps["fp16"].bytes
    assert DTYPE_BYTES == {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}


def test_batch_scales_activations_not_weights():
    p1, p4 = profile("mobilenetv4_conv_small", 64), profile("mobilenetv4_conv_small", 64, batch_size=4)
    assert p4.macs == 4 * p1.macs
    assert p4.weight_bytes == p1.weight_bytes and p4.act_bytes == 4 * p1.act_bytes


def test_by_stage_sums_to_total():
    p = profile("mobilenetv4_hybrid_medium", 64)
    st = p.by_stage()
    assert [g["name"] for g in st][:2] == ["stem", "stages.0"] and st[-1]["name"] == "head"
    assert sum(g["macs"] for g in st) == p.macs and sum(g["bytes"] for g in st) == p.bytes


# --- roofline -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def profiles():
    names = ["mobilenetv1_050", "mobilenetv1_075", "mobilenetv2_100", "mobilenetv3_small_100",
             "mobilenetv3_large_100", "mobilenetv4_conv_small", "mobilenetv4_hybrid_medium"]
    return [profile(n) for n in names]


def test_roofline_per_layer():
    p = profile(nn.Conv2d(3, 8, 3, padding=1, bias=False), 32)
    r = p.layers[0]
    rl = roofline(p, peak_macs=1e9, mem_bw=1e9)
    assert rl.time == pytest.approx(max(r.macs, r.bytes) / 1e9)
    assert rl.ridge_point == 1.0
    bound = "compute" if r.macs > r.bytes else "memory"
    assert rl.layers[0].bound == bound
    assert roofline(p, 1e9, math.inf).time == pytest.approx(r.macs / 1e9)


def test_roofline_bounds_split(profiles):
    rl = roofline(profiles[-1], peak_macs=1e12, mem_bw=1e12 / 10)
    assert rl.compute_bound and rl.memory_bound  # RP 10 splits the hybrid's layers
    assert len(rl.compute_bound) + len(rl.memory_bound) == len(profiles[-1].layers)
    assert all(lt.bound == "memory" for lt in rl.layers if lt.kind == "dwconv")


def test_sweep_rankings(profiles):
    sw = sweep(profiles, rps=(0, 1e9), peak_macs=1e12)
    by_macs = [p.model for p in sorted(profiles, key=lambda p: p.macs)]
    by_bytes = [p.model for p in sorted(profiles, key=lambda p: p.bytes)]
    assert sw.ranking(0) == by_macs
    assert sw.ranking(1e9) == by_bytes
    assert sw.times(0)[profiles[0].model] == pytest.approx(profiles[0].macs / 1e12)
    assert by_macs != by_bytes  # the test would be vacuous otherwise


def test_pareto_front_hand_example():
    pts = {"a": (1.0, 60.0), "b": (2.0, 70.0), "c": (2.5, 65.0),  # c dominated by b
           "d": (3.0, 70.0),                                     # d: slower, not better than b
           "e": (4.0, 80.0), "f": (0.5, 50.0), "g": (4.0, 75.0)}  # g dominated by e
    assert pareto_front(pts) == ["f", "a", "b", "e"]
    assert pareto_front({}) == []
    assert pareto_front({"x": (1.0, 1.0)}) == ["x"]


def test_sweep_pareto_uses_accuracy(profiles):
    sw = sweep(profiles)
    acc = {m: ACCURACY[m].top1 for m in sw.models if m in ACCURACY}
    front = sw.pareto(0, acc)
    assert front[0] == "mobilenetv3_small_100"  # fastest listed model is always on the front
    accs = [acc[m] for m in front]
    assert accs == sorted(accs)


def test_accuracy_table_has_sources():
    assert ACCURACY["mobilenetv3_large_100"].top1 == 74.042
    for name, e in ACCURACY.items():
        assert e.source and 40 < e.top1 < 90 and e.resolution >= 128, name
        assert mobilenets.models.registry.is_model(name) or name.startswith("mobileformer_")


# --- errors ---------------------------------------------------------------------------------
def test_bad_inputs():
    with pytest.raises(ValueError, match="at least 32"):
        profile("mobilenetv2_100", (16, 224))
    with pytest.raises(KeyError, match="unknown model"):
        profile("mobilenetv9_huge")
    with pytest.raises(ValueError, match="dtype"):
        profile("mobilenetv2_100", dtype="fp8")
    with pytest.raises(ValueError, match="batch_size"):
        profile("mobilenetv2_100", batch_size=0)
    p = profile(nn.Conv2d(3, 8, 1), 32)
    for peak, bw in ((0, 1e9), (-1, 1e9), (1e9, 0), (1e9, -5), (float("nan"), 1e9)):
        with pytest.raises(ValueError):
            roofline(p, peak, bw)
    with pytest.raises(ValueError):
        sweep([p], peak_macs=0)
    with pytest.raises(ValueError):
        sweep([p], rps=(-1,))


# --- calibration helpers ----------------------------------------------------------------------
def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    x, y = [1, 2, 2, 3, 5, 4], [2, 1, 3, 3, 6, 5]
    scipy_stats = pytest.importorskip("scipy.stats")
    assert spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).correlation)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError):
        spearman([1, 2], [1])


def test_calibrate_small():
    cal = calibrate(matmul_size=256, copy_mbytes=8, repeats=2)
    assert cal.peak_macs > 1e6 and cal.mem_bw > 1e6 and cal.ridge_point > 0


@pytest.mark.slow
def test_predict_vs_measure_with_onnxruntime():
    from mobilenets.analysis import predict_vs_measure
    rep = predict_vs_measure(["mobilenetv3_small_050", "mobilenetv4_conv_small"],
                             calibrate(512, 32, 2), repeats=2, warmup=1)
    assert all(r.eager and r.predicted for r in rep.rows)
    assert "Spearman" in rep.table()


# --- CLI -------------------------------------------------------------------------------------
@pytest.fixture
def cli():
    parser = argparse.ArgumentParser(prog="mobilenets")
    add_commands(parser.add_subparsers(dest="command"))

    def run(*argv):
        args = parser.parse_args(list(argv))
        return args.func(args)
    return run


def test_cli_profile_json(cli, capsys):
    assert cli("profile", "mobilenetv3_small_100", "--input-size", "96", "96", "--json") == 0
    d = json.loads(capsys.readouterr().out)
    assert d["totals"]["macs"] == profile("mobilenetv3_small_100", 96).macs
    assert d["input_size"] == [96, 96] and d["layers"][0]["name"] == "stem.conv"
    assert cli("profile", "mobilenetv3_small_100", "--by", "stage", "--dtype", "int8",
               "--json") == 0
    d = json.loads(capsys.readouterr().out)
    assert d["dtype"] == "int8" and d["stages"][0]["name"] == "stem"


def test_cli_profile_table_and_plot(cli, capsys, tmp_path):
    png = tmp_path / "intensity.png"
    assert cli("profile", "mobilenetv4_conv_small", "--by", "stage", "--plot", str(png)) == 0
    out = capsys.readouterr().out
    assert "stages.0" in out and "total" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_roofline(cli, capsys, tmp_path):
    png = tmp_path / "sweep.png"
    assert cli("roofline", "mobilenetv3_small_100", "mobilenetv4_conv_small", "mobilenetv1_050",
               "--rp", "0,50", "--peak-macs", "2T", "--input-size", "128", "128", "--json",
               "--plot", str(png)) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["rps"] == [0, 50] and d["peak_macs"] == 2e12
    t = {m["name"]: m for m in d["models"]}
    assert t["mobilenetv4_conv_small"]["times_ms"]["0"] == pytest.approx(
        profile("mobilenetv4_conv_small", 128).macs / 2e12 * 1e3)
    assert "mobilenetv3_small_100" in [m["name"] for m in d["models"] if 0 in m["pareto_at"]]
    assert png.stat().st_size > 1000
    assert cli("roofline", "mobilenetv3_small*", "--rp", "0,10", "--input-size", "64", "64") == 0
    assert "RP=10 ms" in capsys.readouterr().out


@pytest.mark.parametrize("argv,msg", [
    (("profile", "nonexistent_model"), "unknown model"),
    (("profile", "mobilenetv2_100", "--input-size", "16", "16"), "at least 32"),
    (("roofline", "mobilenetv2_100", "--rp", "0,x"), "--rp"),
    (("roofline", "mobilenetv2_100", "--rp", "-5"), "--rp"),
    (("roofline", "mobilenetv2_100", "--peak-macs", "0"), "--peak-macs"),
    (("roofline", "nothing*"), "no registered model"),
])
def test_cli_user_errors(cli, capsys, argv, msg):
    assert cli(*argv) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


def test_macs_at_224():
    assert macs_at_224("mobilenetv2_100") == profile("mobilenetv2_100").macs
    assert mobilenets.analysis.macs_at_224("mobilenetv2_100") == macs_at_224("mobilenetv2_100")
