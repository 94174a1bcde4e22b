"""Latency tables for a search space (issue 25, item 2): parts, runtimes, resume, prediction."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mobilenets
from mobilenets.cli import main
from mobilenets.search.latency import (LatencyTable, TableMismatch, build_table, mean_abs_pct_error,
                                       measure_network, network_parts, rank_correlation, space_parts)
from mobilenets.search.space import SearchSpace
from mobilenets.search.spaces import SPACES

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from search_spaces import tiny_space  # noqa: E402

SIZE = (64, 64)


@pytest.fixture(scope="module")
def tiny():
    return tiny_space()


def test_space_parts_cover_every_architecture(tiny):
    parts = space_parts(tiny, SIZE)
    seen = set()
    rng = random.Random(0)
    for _ in range(200):
        keys = {p.key for p in network_parts(tiny.to_spec(tiny.sample(rng)), SIZE)}
        assert keys <= set(parts)
        seen |= keys
    assert seen == set(parts)  # and nothing extra: every part belongs to some architecture
    # keys say what a part computes: same block and shape -> same key; another shape -> another key
    a = network_parts(tiny.to_spec(tiny.sample(random.Random(1))), SIZE)
    b = network_parts(tiny.to_spec(tiny.sample(random.Random(1))), (96, 96))
    assert a[0].label == b[0].label and a[0].key != b[0].key


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SPACES))
def test_shipped_space_parts_cover_their_models(name):
    space = SPACES[name].with_width(0.5)
    parts = space_parts(space, (96, 96))
    rng = random.Random(0)
    specs = [space.to_spec(space.sample(rng)) for _ in range(20)]
    specs += [mobilenets.model_spec(n).replace(width_mult=0.5) for n in space.contains]
    for spec in specs:
        assert {p.key for p in network_parts(spec, (96, 96))} <= set(parts)


def test_roofline_table_sums_to_the_network_roofline(tiny, tmp_path, capsys):
    out = tmp_path / "roof.json"
    assert main(["search", "table", "--space", _space_file(tiny, tmp_path), "--runtime", "roofline",
                 "--input-size", "64", "--ridge-point", "50", "--out", str(out), "--quiet"]) == 0
    table = LatencyTable.load(out)
    assert len(table.entries) == len(space_parts(tiny, SIZE)) and table.overhead_ms == 0
    rng = random.Random(2)
    for _ in range(5):
        spec = tiny.to_spec(tiny.sample(rng))
        assert table.predict(spec) == pytest.approx(measure_network(spec, table)["ms"], rel=1e-9)
    # repeated identical blocks (MNv4-Conv-S's uir_r4 / uir_r2 rows): one entry, counted per block
    conv_s = mobilenets.model_spec("mobilenetv4_conv_small").replace(width_mult=0.25)
    assert table.ensure(conv_s) > 0
    parts = network_parts(conv_s, SIZE)
    assert len({p.key for p in parts}) < len(parts)
    assert table.predict(conv_s) == pytest.approx(measure_network(conv_s, table)["ms"], rel=1e-9)
    # a higher ridge point (less bandwidth) can only slow a network down
    out2 = tmp_path / "roof500.json"
    assert main(["search", "table", "--space", _space_file(tiny, tmp_path), "--runtime", "roofline",
                 "--input-size", "64", "--ridge-point", "500", "--out", str(out2), "--quiet"]) == 0
    spec = tiny.to_spec(tiny.sample(rng))
    assert LatencyTable.load(out2).predict(spec) > table.predict(spec)
    # --calibrate: this machine's measured peak (and its ridge point) instead of the defaults
    out3 = tmp_path / "cal.json"
    assert main(["search", "table", "--space", _space_file(tiny, tmp_path), "--runtime", "roofline", "--calibrate",
                 "--input-size", "64", "--out", str(out3), "--quiet"]) == 0
    meta = LatencyTable.load(out3).meta
    assert 1e8 < meta["peak_macs"] < 1e13 and meta["peak_macs"] != 1e12 and meta["ridge_point"] > 0
    capsys.readouterr()
    assert main(["search", "predict", "--table", str(out), "--random", "4", "--measure", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["mean_abs_error_pct"] == pytest.approx(0, abs=1e-6) and res["spearman"] == pytest.approx(1.0)


def _space_file(space: SearchSpace, tmp_path: Path) -> str:
    path = tmp_path / f"{space.name}.json"
    path.write_text(json.dumps(space.to_dict()))
    return str(path)


@pytest.fixture(scope="module")
def ort_table(tiny, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    table = LatencyTable.new(tiny, SIZE, "ort", threads=1, path=tmp_path_factory.mktemp("ort") / "t.json")
    return build_table(table, fit_networks=2, seconds=0.05, progress=False)


def test_ort_table_measures_every_part_and_predicts(tiny, ort_table):
    assert set(ort_table.entries) == set(space_parts(tiny, SIZE)) and len(ort_table.networks) == 2
    for e in ort_table.entries.values():
        assert 0 < e["p25"] <= e["median"] <= e["p75"] and e["n"] >= 10 and e["std"] >= 0
    saved = LatencyTable.load(ort_table.path)
    spec = tiny.to_spec(tiny.sample(random.Random(4)))
    assert saved.predict(spec) == ort_table.predict(spec) > 0
    # overhead: measured whole networks minus their summed parts (median over the fitted ones)
    diffs = [n["measured"]["median"] - n["sum_ms"] for n in saved.networks.values()]
    assert min(diffs) <= saved.overhead_ms <= max(diffs)


def test_entries_reproduce_within_their_spread(tiny, ort_table):
    """Measured again, most entries land inside the first measurement's Tukey fences (a shared CPU
    makes the odd one miss; a wrong key or module would miss on most)."""
    from mobilenets.search.latency import runtime_timer

    parts = space_parts(tiny, SIZE)
    measure = runtime_timer("ort", "fp32", 1, seconds=0.05)
    keys = sorted(ort_table.entries)[:12]
    inside = 0
    for key in keys:
        e, again = ort_table.entries[key], measure(parts[key].materialize(), parts[key].in_shape)
        iqr = e["p75"] - e["p25"]
        inside += e["p25"] - 1.5 * iqr - 0.02 <= again["median"] <= e["p75"] + 1.5 * iqr + 0.02
    assert inside >= 0.75 * len(keys), f"{inside}/{len(keys)} entries reproduced"


def test_killed_table_build_resumes(tiny, tmp_path):
    """kill -9 during a build loses at most the entry being measured; the same command resumes."""
    pytest.importorskip("onnxruntime")
    out = tmp_path / "t.json"
    cmd = [sys.executable, "-m", "mobilenets", "search", "table", "--space", _space_file(tiny, tmp_path),
           "--runtime", "ort", "--input-size", "64", "--out", str(out), "--seconds", "0.05", "--fit-networks", "1",
           "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(Path(mobilenets.__file__).parents[1])}
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        if out.exists() and len(json.loads(out.read_text())["entries"]) >= 5:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = json.loads(out.read_text())["entries"]   # the file is whole: JSON loads
    assert 5 <= len(before) < len(space_parts(tiny, SIZE))
    assert subprocess.run(cmd, env=env).returncode == 0
    after = json.loads(out.read_text())
    assert len(after["entries"]) == len(space_parts(tiny, SIZE)) and len(after["networks"]) == 1
    assert all(after["entries"][k] == v for k, v in before.items())   # measured once, kept


def test_tables_refuse_what_they_were_not_measured_for(tiny, ort_table, tmp_path, capsys):
    with pytest.raises(TableMismatch, match="measured for space 'tiny', given 'mnv4_conv_small'"):
        ort_table.check_for(SPACES["mnv4_conv_small"])
    with pytest.raises(TableMismatch, match=r"input_size \[64, 64\], given \[96, 96\]"):
        ort_table.check_for(tiny, (96, 96))
    with pytest.raises(TableMismatch, match="not in the table"):
        ort_table.predict(mobilenets.model_spec("mobilenetv4_conv_medium"))
    # the CLI: resuming a table with other settings, an unknown runtime, roofline-only options
    assert main(["search", "table", "--space", _space_file(tiny, tmp_path), "--runtime", "ort", "--input-size", "96",
                 "--out", str(ort_table.path)]) == 2
    assert "measured at input_size [64, 64], given [96, 96]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["search", "table", "--space", "mnv4_conv_small", "--runtime", "tensorrt", "--out", "x.json"])
    assert e.value.code == 2 and "invalid choice: 'tensorrt'" in capsys.readouterr().err
    assert main(["search", "table", "--space", "mnv4_conv_small", "--runtime", "ort", "--ridge-point", "10",
                 "--out", str(tmp_path / "y.json")]) == 2
    assert "roofline options" in capsys.readouterr().err and not (tmp_path / "y.json").exists()
    assert main(["search", "table", "--space", "mnv4_conv_small", "--runtime", "roofline", "--calibrate",
                 "--peak-macs", "1e11", "--out", str(tmp_path / "y.json")]) == 2
    assert "not both" in capsys.readouterr().err and not (tmp_path / "y.json").exists()
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["search", "predict", "--table", str(bad), "mobilenetv4_conv_small"]) == 2
    assert "not a mobilenets latency table" in capsys.readouterr().err


def test_prediction_metrics():
    assert mean_abs_pct_error([1.1, 0.9], [1.0, 1.0]) == pytest.approx(10.0)
    assert rank_correlation([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="equal, non-empty"):
        mean_abs_pct_error([1.0], [1.0, 2.0])
