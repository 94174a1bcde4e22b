"""mobilenets search run: the TuNAS loop end to end, exact resume after kill -9, two gloo ranks,
and one clear error per bad input with nothing written (issue 25, item 3)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mobilenets
from mobilenets.archs.spec import parse_net
from mobilenets.cli import main
from mobilenets.search.latency import LatencyTable, build_table
from mobilenets.search.spaces import SPACES

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from search_spaces import tiny_space  # noqa: E402

SRC = str(Path(mobilenets.__file__).parents[1])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The tiny space as a file and its roofline table at 224 (a deterministic cost model)."""
    d = tmp_path_factory.mktemp("search")
    space = tiny_space()
    (d / "tiny.json").write_text(json.dumps(space.to_dict()))
    table = LatencyTable.new(space, (224, 224), "roofline", ridge_point=10.0, peak_macs=2e10, path=d / "roof.json")
    build_table(table, progress=False)
    return d, space, table


def _cmd(d: Path, out: Path, steps: int = 8, *extra: str) -> list:
    return ["search", "run", "--space", str(d / "tiny.json"), "--table", str(d / "roof.json"), "--target-ms", "5.9",
            "--out", str(out), "--steps", str(steps), "--batch-size", "32", "--input-size", "32", "--quiet", *extra]


def test_search_writes_the_found_architecture(setup, capsys):
    d, space, table = setup
    out = d / "run"
    assert main(_cmd(d, out)) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    spec = parse_net(last)                           # the last line is the spec string
    assert space.contains_spec(spec)                 # a member of the space
    assert (out / "found.txt").read_text().strip() == last
    assert json.loads((out / "found.json").read_text()) == spec.to_dict()
    hist = json.loads((out / "history.json").read_text())
    assert [h["stage"] for h in hist["history"]] == ["coarse"] * 4 + ["fine"] * 4
    assert hist["predicted_ms"] == pytest.approx(table.predict(spec))
    assert all(h["latency_ms"] > 0 and 0 <= h["quality"] <= 1 for h in hist["history"])
    assert hist["probabilities"] and (out / "search.png").stat().st_size > 10_000
    model = mobilenets.create_model(str(out / "found.json"), num_classes=10)   # it trains like any model
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def _run_child(d: Path, out: Path, steps: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    code = f"import sys, torch; torch.set_num_threads(1); from mobilenets.cli import main; sys.exit(main({_cmd(d, out, steps, '--checkpoint-seconds', '0')!r}))"
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_coarse_warmup_trains_every_op_and_one_lr_schedule_spans_both_stages(setup, monkeypatch):
    """The coarse stage fixes every block to IB k3, but its op warm-up still runs ALL ops (both
    depthwise slots, 5x5), so the fine stage starts from trained start-dw / 5x5 weights; and the
    learning rate continues over the fine stage instead of restarting its warm-up."""
    from mobilenets.search import run as run_mod
    from mobilenets.search.controller import ALL

    d, space, _ = setup
    seen = []
    original = run_mod._Search.weight_step

    def record(self, path, lr):
        seen.append((dict(path), lr))
        return original(self, path, lr)

    monkeypatch.setattr(run_mod._Search, "weight_step", record)
    settings = run_mod.SearchSettings(space=str(d / "tiny.json"), table=str(d / "roof.json"), target_ms=5.9,
                                      data="digits", out=str(d / "warm"), steps=16, batch_size=32, img_size=32)
    run_mod.run_search(settings, progress=False)
    ops = [k for k in seen[0][0] if k.endswith(".op")]
    assert ops and all(seen[0][0][k] == ALL for k in ops)      # coarse step 0: warm-up probability 1
    assert not any(v == ALL for v in seen[7][0].values())     # warm-up over by the last coarse step
    # after the warm-up, coarse weight steps still train other ops than the coarse IB k3 (about
    # half the blocks, coarse_op_mix), and the fine stage's paths are its own
    coarse = run_mod._to_full(space, space.coarse(), {d.name: 0 for d in space.coarse().decisions()})
    mixed = [k for p, _ in seen[2:8] for k in ops if p[k] != ALL and p[k] != coarse[k]]
    assert len(mixed) >= 2
    lrs = [lr for _, lr in seen]
    peak = lrs.index(max(lrs))
    assert peak < 8 and all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:]))   # one warm-up, then down


def test_resume_after_kill_is_exact(setup):
    d, _, _ = setup
    ref, killed = d / "ref", d / "killed"
    p = _run_child(d, ref, 10)
    assert p.wait() == 0, p.stderr.read().decode()[-2000:]
    p = _run_child(d, killed, 10)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        ck = killed / "search.pt"
        if ck.exists():
            try:
                state = torch.load(ck, map_location="cpu", weights_only=False)["search"]
            except Exception:  # noqa: BLE001 - caught mid-rename; try again
                continue
            if len(state["history"]) >= 3:
                break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (killed / "found.txt").exists(), "killed too late: the search had finished"
    p = _run_child(d, killed, 10)
    assert p.wait() == 0, p.stderr.read().decode()[-2000:]
    a, b = (json.loads((x / "history.json").read_text()) for x in (ref, killed))
    assert a["spec"] == b["spec"]
    for key in ("history", "probabilities"):
        assert a[key] == b[key]   # every step's loss, quality, reward, advantage; the controller's probabilities
    wa = torch.load(ref / "search.pt", weights_only=False)["net"]
    wb = torch.load(killed / "search.pt", weights_only=False)["net"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_two_gloo_ranks_keep_replicas_identical(setup):
    d, _, _ = setup
    out = d / "ddp"
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    import socket

    with socket.socket() as s:   # a free port: another test (or a parallel worker) may hold any fixed one
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "mobilenets", *_cmd(d, out, 6)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    hist = json.loads((out / "history.json").read_text())
    assert hist["replicas_identical"] == 2   # checked by all-gathering a checksum of every weight


def _with(args: list, flag: str, value: str) -> list:
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


def test_bad_input_one_clear_error_nothing_written(setup, tmp_path, capsys):
    from mobilenets.search.run import cheapest_ms

    d, space, table = setup
    out = tmp_path / "o"
    assert main(_with(_cmd(d, out), "--target-ms", str(cheapest_ms(space, table) * 0.5))) == 2
    assert "below the cheapest architecture" in capsys.readouterr().err
    (tmp_path / "other.json").write_text(json.dumps(SPACES["mnv4_conv_small"].to_dict()))
    assert main(_with(_cmd(d, out), "--space", str(tmp_path / "other.json"))) == 2
    assert "was measured for space 'tiny', given 'mnv4_conv_small'" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(_cmd(d, out) + ["--data", str(empty)]) == 2
    assert "no images" in capsys.readouterr().err.lower()
    assert main(_with(_cmd(d, out), "--table", str(tmp_path / "missing.json"))) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(_cmd(d, out) + ["--threads", "-1"]) == 2
    assert "--threads must be >= 1 (or 0: torch's default), got -1" in capsys.readouterr().err
    assert not out.exists()   # nothing written by any of them


def test_resuming_with_other_settings_is_refused(setup, capsys):
    d, _, _ = setup
    out = d / "settings"
    assert main(_cmd(d, out, 4)) == 0
    capsys.readouterr()
    assert main(_cmd(d, out, 4, "--seed", "3")) == 2
    assert "a search with other settings (seed: 0 there, 3 given)" in capsys.readouterr().err
    shutil.rmtree(out)


@pytest.mark.parametrize("sandwich", [False, True])
def test_sandwich_trains_the_deep_blocks_on_every_step(setup, sandwich):
    """A weight step through the shallowest path leaves the blocks only deeper paths use alone;
    with ``sandwich`` the whole supernet's gradient on the same batch trains them too."""
    from mobilenets.search import run as run_mod

    d, space, _ = setup
    settings = run_mod.SearchSettings(space=str(d / "tiny.json"), table=str(d / "roof.json"), target_ms=5.9,
                                      data="digits", out=str(d / f"sandwich{int(sandwich)}"), steps=4, batch_size=32,
                                      img_size=32, sandwich=sandwich)
    srch = run_mod._Search(settings, progress=False)
    shallow = {dd.name: 0 for dd in space.decisions()}         # the smallest depth of every stage
    before = {k: v.detach().clone() for k, v in srch.net.named_parameters()}
    srch.weight_step(shallow, 0.1)
    changed = {k for k, v in srch.net.named_parameters() if not torch.equal(before[k], v)}
    srch.net.set_path(shallow)
    unused = set(before) - changed
    assert changed                                             # the shallow path trained
    if sandwich:
        assert not unused, sorted(unused)[:5]                  # every weight of the supernet moved
    else:
        assert any(".1." in k for k in unused), sorted(unused)[:5]   # second blocks untouched


def test_rerank_candidates_are_distinct_within_the_window_most_likely_first(setup):
    """A converged controller draws its pick again and again: flattening its distribution still
    yields k distinct candidates, every one within the window, the pick first; an exactly one-hot
    controller (an old checkpoint's pick alone) yields only the pick."""
    from mobilenets.search.rerank import rerank_candidates, tempered

    d, space, table = setup
    names = [dd.name for dd in space.decisions()]
    sure = {dd.name: [0.999] + [0.001 / (len(dd.choices) - 1)] * (len(dd.choices) - 1) for dd in space.decisions()}
    pick = space.to_spec(space.canonical({n: 0 for n in names}))
    target = table.predict(pick)
    cands = rerank_candidates(space, sure, table.predict, target, 5, 0.5, seed=0)
    assert len(cands) == 5 and cands[0] == pick
    assert len({str(c) for c in cands}) == 5
    assert all(abs(table.predict(c) / target - 1) <= 0.5 for c in cands)
    narrow = rerank_candidates(space, sure, table.predict, target, 5, 0.001, seed=0, max_draws=400)
    assert all(abs(table.predict(c) / target - 1) <= 0.001 for c in narrow) and narrow[0] == pick
    one_hot = {dd.name: [1.0] + [0.0] * (len(dd.choices) - 1) for dd in space.decisions()}
    assert rerank_candidates(space, one_hot, table.predict, target, 5, 0.5, max_draws=400) == [pick]
    assert tempered([0.9, 0.1], 1.0) == pytest.approx([0.9, 0.1])
    assert tempered([0.9, 0.1], 64.0)[1] > 0.45
    with pytest.raises(ValueError, match="lack the space's decisions"):
        rerank_candidates(space, {}, table.predict, target, 5, 0.5)


def test_rerank_trains_candidates_alone_and_keeps_the_best_on_held_out(setup, capsys):
    """``--rerank 3``: three candidates trained from scratch (one epoch each), scored on the
    held-out split (not val), the best one is the found architecture; running the command again
    keeps the results (no candidate trains twice)."""
    from mobilenets.search.data import classification_splits

    d, space, table = setup
    out = d / "rerank"
    cmd = _cmd(d, out, 4, "--rerank", "3", "--rerank-epochs", "1", "--rerank-window", "0.5")
    assert main(cmd) == 0
    text = capsys.readouterr().out
    last = text.strip().splitlines()[-1]
    rr = json.loads((out / "history.json").read_text())["rerank"]
    assert len(rr["candidates"]) == 3 == len(rr["results"])
    assert rr["candidates"][0] == rr["controller_pick"]                # the controller's pick is a candidate
    scores = [r["heldout_top1"] for r in rr["results"]]
    assert rr["pick"] == rr["results"][scores.index(max(scores))]["spec"] == last
    assert (out / "found.txt").read_text().strip() == last
    assert "<- found" in text and "re-ranked 3 of 3 candidates" in text
    from PIL import Image

    assert Image.open(out / "search.png").size[0] > 2000               # the re-ranking panel beside the three
    _, held, val, *_ = classification_splits("digits", 32, 32, 0, 0.2)
    for i, r in enumerate(rr["results"]):
        m = json.loads((out / "rerank" / f"cand{i:02d}" / "metrics.json").read_text())
        assert m["history"][-1]["val_n"] == len(held) != len(val)      # scored on the held-out split
        assert m["history"][-1]["val_top1"] == pytest.approx(r["heldout_top1"])
        assert len(m["history"]) == 1
    stamp = [(out / "rerank" / f"cand{i:02d}" / "last.pt").stat().st_mtime_ns for i in range(3)]
    assert main(cmd) == 0                                               # resumed: nothing trains again
    assert capsys.readouterr().out.strip().splitlines()[-1] == last
    assert stamp == [(out / "rerank" / f"cand{i:02d}" / "last.pt").stat().st_mtime_ns for i in range(3)]


def test_rerank_settings_are_checked():
    from mobilenets.search.run import SearchSettings

    for kw, msg in (({"rerank": 1}, "at least 2 candidates"), ({"rerank": 3, "rerank_epochs": 0}, "rerank_epochs"),
                    ({"rerank": 3, "rerank_share": 1.0}, "rerank_share"),
                    ({"rerank": 3, "rerank_window": 0}, "rerank_window")):
        with pytest.raises(ValueError, match=msg):
            SearchSettings(space="s", table="t", target_ms=1.0, **kw)
    assert SearchSettings(space="s", table="t", target_ms=1.0, minutes=10, rerank=4).rl_minutes == 5.0
    assert SearchSettings(space="s", table="t", target_ms=1.0, minutes=10).rl_minutes == 10.0


def test_rerank_under_torchrun_is_refused_before_any_step(setup, monkeypatch):
    from mobilenets.search import run as run_mod
    from mobilenets.train import distributed

    d, _, _ = setup
    monkeypatch.setattr(distributed, "setup_distributed", lambda recipe: distributed.DistInfo(rank=0, world=2))
    settings = run_mod.SearchSettings(space=str(d / "tiny.json"), table=str(d / "roof.json"), target_ms=5.9,
                                      data="digits", out=str(d / "rr_ddp"), steps=4, batch_size=32, img_size=32,
                                      rerank=2)
    with pytest.raises(ValueError, match="rerank trains its candidates in one process"):
        run_mod.run_search(settings, progress=False)
    assert not (d / "rr_ddp").exists()
