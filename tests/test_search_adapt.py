"""mobilenets search adapt: NetAdapt (Yang et al. 2018) on a trained model (issue 25, item 4).

Weight transfer slices exactly and keeps the function where the cut channels contributed nothing;
width groups tied by identity shortcuts are cut together and no shortcut appears or vanishes; with
a roofline table (deterministic) the run meets its target, writes an ordinary spec and a
checkpoint the library loads; an unreachable target and a non-NetSpec model are refused."""

import json
import sys
from pathlib import Path

import pytest
import torch

import mobilenets
from mobilenets.archs.spec import parse_net
from mobilenets.cli import main
from mobilenets.search.latency import LatencyTable, build_table
from mobilenets.search.netadapt import AdaptError, AdaptSettings, Structure, adapt, expansion_ratio

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from search_spaces import tiny_space  # noqa: E402

# stem + ds share a width (the ds shortcut); stages.1.* share one; stages.2.0-1 share one and
# stages.2.2 (stride 1, 32 -> 40) has no shortcut; a hidden head
SPEC = ("mobilenetv3:stem=16,act=hard_swish,head=64:ds_r1_k3_s1_c16:ir_r1_k3_s2_e4_c24,ir_r1_k3_s1_e3_c24:"
        "ir_r1_k5_s2_e3_c32,ir_r1_k3_s1_e3_c32,ir_r1_k3_s1_e3_c40:cn_r1_k1_s1_c64")
# the runs: fewer layers (every layer is a proposal per iteration)
SMALL = "mobilenetv3:stem=16,act=hard_swish,head=32:ds_r1_k3_s1_c16:ir_r1_k3_s2_e3_c24,ir_r1_k3_s1_e3_c24:cn_r1_k1_s1_c48"


def _model(seed: int = 0, spec: str = SPEC) -> torch.nn.Module:
    """``spec`` with random BatchNorm statistics and affine parameters (so a slice that dropped the
    wrong channel shows), in eval mode."""
    torch.manual_seed(seed)
    m = mobilenets.create_model(spec, num_classes=10).eval()
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.2, 0.2)
                bn.running_mean.uniform_(-0.1, 0.1)
                bn.running_var.uniform_(0.5, 1.5)
    return m


@pytest.fixture(scope="module")
def roof(tmp_path_factory):
    """A roofline table at 32 px (compute bound, 1 GMAC/s): a deterministic cost model."""
    d = tmp_path_factory.mktemp("adapt")
    table = LatencyTable.new(tiny_space(), (32, 32), "roofline", ridge_point=0.0, peak_macs=1e9, path=d / "roof.json")
    build_table(table, progress=False)
    return d, table


def test_width_groups_follow_the_shortcuts():
    st = Structure(_model())
    groups = {layer.key: layer.name for layer in st.layers if layer.kind == "filters"}
    assert st.space_of["stem"] == st.space_of["stages.0.0"]                     # the ds shortcut
    assert st.space_of["stages.1.0"] == st.space_of["stages.1.1"] != st.space_of["stages.0.0"]
    assert st.space_of["stages.2.0"] == st.space_of["stages.2.1"] != st.space_of["stages.2.2"]
    assert len(groups) == 5 and groups[st.space_of["stages.1.0"]] == "filters of stages.1.0 + 1 on its shortcut"
    kinds = [layer.kind for layer in st.layers]
    assert kinds.count("expansion") == 5 and kinds.count("hidden") == 1


def test_cut_groups_keep_the_shortcuts_as_they_were():
    src = _model()
    st = Structure(src)
    skips = [getattr(b, "has_skip", False) for _, b in src.blocks()]
    w = st.widths(src)
    g1, g2, g3 = st.space_of["stages.1.0"], st.space_of["stages.2.0"], st.space_of["stages.2.2"]
    cut = {**w, g1: 16, g2: 24, g3: 24}   # stages.2.2 now 24 -> 24 at stride 1: its input equals its output
    spec = st.spec_for(cut)
    assert spec.stages[2][2].skip is False and "noskip" in str(spec)
    model = mobilenets.create_model(str(spec), num_classes=10)
    assert [getattr(b, "has_skip", False) for _, b in model.blocks()] == skips               # no shortcut gained, none lost
    blocks = dict(model.blocks())
    assert blocks["stages.1.0"].out_chs == blocks["stages.1.1"].out_chs == 16   # the group cut together
    assert st.widths(model) == cut


def test_transfer_is_an_exact_slice_and_keeps_the_function():
    src = _model()
    st = Structure(src)
    g = st.space_of["stages.1.0"]
    cut_g, cut_m, cut_h = [1, 5, 9, 13, 17, 20, 22, 23], [0, 2, 4, 6, 8, 10, 12, 14], [3, 7, 11, 15, 19, 23, 27, 31]
    with torch.no_grad():
        # channels that contribute nothing: a group channel both producers output as 0 (the
        # residual sum stays 0), an expansion channel zero after its expand and dw BatchNorms, a
        # hidden unit with zero weights and bias (hard-swish(0) = 0)
        for p in ("stages.1.0", "stages.1.1"):
            bn = dict(src.named_modules())[f"{p}.project.bn"]
            bn.weight[cut_g], bn.bias[cut_g] = 0.0, 0.0
        blk = dict(src.blocks())["stages.2.1"]
        for bn in (blk.expand.bn, blk.dw.bn):
            bn.weight[cut_m], bn.bias[cut_m] = 0.0, 0.0
        src.head.hidden.weight[cut_h], src.head.hidden.bias[cut_h] = 0.0, 0.0
    w = st.widths(src)
    widths = {**w, g: w[g] - 8, "m:stages.2.1": w["m:stages.2.1"] - 8, "hidden": w["hidden"] - 8}
    new = st.transfer(src, mobilenets.create_model(str(st.spec_for(widths)), num_classes=10)).eval()
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(new(x), src(x), atol=1e-5, rtol=1e-4)
    keep = lambda n, cut: torch.tensor([i for i in range(n) if i not in cut])  # noqa: E731
    a, b = src.state_dict(), new.state_dict()
    kg, km, kh = keep(w[g], cut_g), keep(w["m:stages.2.1"], cut_m), keep(w["hidden"], cut_h)
    assert torch.equal(b["stages.1.1.project.conv.weight"], a["stages.1.1.project.conv.weight"][kg])
    assert torch.equal(b["stages.1.1.expand.conv.weight"], a["stages.1.1.expand.conv.weight"][:, kg])
    assert torch.equal(b["stages.2.0.expand.conv.weight"], a["stages.2.0.expand.conv.weight"][:, kg])
    assert torch.equal(b["stages.1.0.project.bn.running_var"], a["stages.1.0.project.bn.running_var"][kg])
    assert torch.equal(b["stages.2.1.dw.conv.weight"], a["stages.2.1.dw.conv.weight"][km])
    assert torch.equal(b["stages.2.1.project.conv.weight"], a["stages.2.1.project.conv.weight"][:, km])
    assert torch.equal(b["head.fc.weight"], a["head.fc.weight"][:, kh])
    untouched = [k for k in a if a[k].shape == b[k].shape]
    assert "stem.conv.weight" in untouched and "stages.2.2.expand.conv.weight" in untouched
    assert all(torch.equal(a[k], b[k]) for k in untouched)


def test_expansion_ratio_gives_the_channels():
    for mid, cin in ((64, 24), (120, 40), (8, 96), (200, 24)):
        e = expansion_ratio(mid, cin)
        assert mobilenets.layers.make_divisible(cin * e) == mid and len(repr(e)) <= 8


def test_adapt_reaches_the_target_and_saves_a_loadable_model(roof, tmp_path):
    d, _ = roof
    table_path = tmp_path / "roof.json"
    table_path.write_text((d / "roof.json").read_text())
    before = len(json.loads(table_path.read_text())["entries"])
    src = _model(spec=SMALL)
    start = LatencyTable.load(table_path)
    st = Structure(src)
    start.ensure(st.spec_for({}), 10, save=False)
    target = 0.85 * start.predict(st.spec_for({}), 10)
    s = AdaptSettings(table=str(table_path), target_ms=target, out=str(tmp_path / "out"), short_steps=1,
                      long_steps=2, batch_size=32, img_size=32, reduction=0.05)
    res = adapt(src, s, progress=False)
    assert res.predicted_ms <= target and res.measured_ms <= target < res.start_ms
    table = LatencyTable.load(table_path)
    assert len(table.entries) > before                        # the pruned widths were added to the table
    assert table.predict(res.spec, 10) == pytest.approx(res.predicted_ms)
    assert res.iterations == len(res.history) >= 1
    for h in res.history:
        assert h["filters_after"] < h["filters_before"] and h["filters_after"] % 8 == 0
        assert 0 <= h["held_out_top1"] <= 1 and h["predicted_ms"] <= h["required_ms"] + 1e-9
        assert any(p["layer"] == h["layer"] for p in h["proposals"])
    assert [h["predicted_ms"] for h in res.history] == sorted((h["predicted_ms"] for h in res.history), reverse=True)
    assert res.history[-1]["measured_ms"] == pytest.approx(res.measured_ms)
    text = (tmp_path / "out" / "adapted.txt").read_text().strip()
    assert parse_net(text) == res.spec and text == str(res.spec)
    hist = json.loads((tmp_path / "out" / "history.json").read_text())
    assert hist["spec"] == text and len(hist["history"]) == res.iterations
    model, info = mobilenets.model_from_checkpoint(res.checkpoint)
    assert model.spec == res.spec and info["classes"] == [str(i) for i in range(10)]
    saved = torch.load(res.checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    fresh = mobilenets.create_model(text, num_classes=10)      # an ordinary spec string
    assert fresh.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    # a finished run in the same folder returns its result without redoing anything
    again = adapt(src, s, progress=False)
    assert str(again.spec) == text and again.val_top1 == res.val_top1
    with pytest.raises(AdaptError, match=r"other settings \(target_ms: .* there, 1.0 given\)"):
        adapt(src, AdaptSettings(**{**s.__dict__, "target_ms": 1.0}), progress=False)


def test_unreachable_target_is_refused_before_anything_is_written(roof, tmp_path):
    d, _ = roof
    s = AdaptSettings(table=str(d / "roof.json"), target_ms=1e-4, out=str(tmp_path / "out"), short_steps=1,
                      long_steps=1, batch_size=32, img_size=32)
    with pytest.raises(AdaptError, match=r"below what adapting this model can reach.*8 channels"):
        adapt(_model(spec=SMALL), s, progress=False)
    assert not (tmp_path / "out" / "adapted.pt").exists() and not (tmp_path / "out" / "adapt.pt").exists()


def test_other_families_are_refused():
    with pytest.raises(AdaptError, match="MobileNet V1-V4 .* got a MobileFormer"):
        Structure(mobilenets.create_model("mobileformer_26m", num_classes=10))


def test_cli_end_to_end_from_a_training_checkpoint(roof, tmp_path, capsys):
    d, _ = roof
    table_path = tmp_path / "roof.json"
    table_path.write_text((d / "roof.json").read_text())
    assert main(["train", "--model", SMALL, "--epochs", "1", "--input-size", "32", "--batch-size", "64",
                 "--out", str(tmp_path / "train"), "--no-progress"]) == 0
    ck = tmp_path / "train" / "best.pt"
    model, _ = mobilenets.model_from_checkpoint(ck)
    table = LatencyTable.load(table_path)
    spec = Structure(model).spec_for({})
    table.ensure(spec, 10)
    target = 0.85 * table.predict(spec, 10)
    capsys.readouterr()
    args = ["search", "adapt", str(ck), "--table", str(table_path), "--target-ms", f"{target:.6f}", "--out",
            str(tmp_path / "out"), "--short-steps", "2", "--long-steps", "3", "--batch-size", "32", "--quiet"]
    assert main(args) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert LatencyTable.load(table_path).predict(parse_net(last), 10) <= target
    assert main(["eval", str(tmp_path / "out" / "adapted.pt"), "--no-progress"]) == 0
    assert "top-1" in capsys.readouterr().out.lower()
    # a name / spec string needs its weights; a missing checkpoint names what was expected
    assert main(["search", "adapt", SMALL, "--table", str(table_path), "--target-ms", "1",
                 "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "--weights" in capsys.readouterr().err and not (tmp_path / "x").exists()
