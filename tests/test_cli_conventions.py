"""The conventions every command shares: ``--json [FILE]``, ``--input-size N | H W`` and
``--batch-size`` (old spellings as aliases), and how errors end a command (exit 2 with the
whole message for user errors, exit 1 with a traceback for bugs)."""

import argparse
import json

import pytest

import mobilenets
from mobilenets.cli import build_parser, main
from mobilenets.cli.common import UserError, run_handler


def _parse(*argv):
    return build_parser().parse_args(list(argv))


# --- errors -------------------------------------------------------------------------------------
def test_checkpoint_error_printed_whole(tmp_path, capsys):
    w = mobilenets.save_weights(mobilenets.create_model("mobileformer_52m"), tmp_path / "52m.safetensors")
    out = tmp_path / "m.onnx"
    assert main(["export", "mobileformer_96m", "--weights", str(w), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mobilenets export: error: ") and "does not fit mobileformer_96m:" in err
    for part in ("missing (", "unexpected (", "mis-shaped (",
                 "it appears to be a checkpoint for mobileformer_52m"):
        assert part in err, err
    assert len(err.strip().splitlines()) >= 4 and "Traceback" not in err
    assert not out.exists()


def test_unexpected_exception_is_a_bug_exit_1_with_traceback(monkeypatch, capsys):
    import mobilenets.cli.models as cli

    def broken(*a, **k):
        raise TypeError("an internal bug")

    monkeypatch.setattr(cli, "list_rows", broken)
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "TypeError: an internal bug" in err
    assert "mobilenets list: internal error" in err


@pytest.mark.parametrize("exc,code", [
    (UserError("bad flag\nsecond line"), 2),
    (ValueError("bad value"), 2),
    (FileNotFoundError("checkpoint not found: x.pt"), 2),
    (ImportError("plotting needs matplotlib: pip install matplotlib"), 2),
    (KeyError("a dict lookup that failed"), 1),   # a bare KeyError is a bug, not bad input
    (AttributeError("no attribute"), 1),
])
def test_run_handler_user_errors_vs_bugs(exc, code, capsys):
    def fn(args):
        raise exc
    assert run_handler(fn, argparse.Namespace(command="x")) == code
    err = capsys.readouterr().err
    assert ("Traceback" in err) == (code == 1)
    if code == 2:
        assert err == f"mobilenets x: error: {exc}\n"


def test_unknown_recipe_is_a_user_error(capsys):
    from mobilenets.cli.train import main as train_main
    assert train_main(["train", "--recipe", "nope"]) == 2
    err = capsys.readouterr().err
    assert "error: unknown recipe 'nope'; choose from" in err and "Traceback" not in err


# --- --json [FILE] ------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,check", [
    (["list", "mobilenetv1*", "--no-macs"], lambda d: d[0]["name"] == "mobilenetv1_025"),
    (["profile", "mobilenetv1_025", "--input-size", "64", "--by", "stage"],
     lambda d: d["input_size"] == [64, 64] and d["stages"][0]["name"] == "stem"),
    (["roofline", "mobilenetv1_025", "--rp", "0,10", "--input-size", "64"],
     lambda d: d["rps"] == [0, 10] and d["models"][0]["input_size"] == [64, 64]),
])
def test_json_stdout_and_file(argv, check, tmp_path, capsys):
    assert main(argv + ["--json"]) == 0
    out = capsys.readouterr().out
    assert check(json.loads(out))  # stdout is the JSON and nothing else
    f = tmp_path / "out.json"
    assert main(argv + ["--json", str(f)]) == 0
    out = capsys.readouterr().out
    assert check(json.loads(f.read_text()))
    assert f"wrote {f}" in out and "----" in out  # the table is still printed


def test_bench_json_stdout(capsys):
    assert main(["bench", "mobilenetv1_025", "--batch-size", "1", "--threads", "1", "--input-size", "64",
                 "--paths", "eager", "--repeats", "2", "--quiet", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["size"] == 64 and [r["path"] for r in d["rows"]] == ["eager"]


def test_json_file_unwritable_is_a_user_error(tmp_path, capsys):
    bad = tmp_path / "no" / "such" / "dir.json"
    assert main(["list", "mobilenetv1_025", "--no-macs", "--json", str(bad)]) == 2
    assert "mobilenets list: error:" in capsys.readouterr().err


# --- one size flag and one batch flag, old spellings as aliases --------------------------------
@pytest.mark.parametrize("command", [
    ["info", "mobilenetv1_025"], ["profile", "mobilenetv1_025"], ["roofline"],
    ["export", "mobilenetv1_025", "--out", "m.onnx"], ["bench", "mobilenetv1_025"],
    ["train"], ["eval", "ck.pt"],
])
def test_size_aliases_parse_the_same(command):
    sizes = {flag: _parse(*command, flag, "96").input_size for flag in ("--input-size", "--img-size", "--size")}
    assert set(sizes.values()) == {(96, 96)}, sizes
    assert _parse(*command, "--input-size", "96", "96").input_size == (96, 96)
    assert _parse(*command, "--input-size", "96", "128").input_size == (96, 128)


@pytest.mark.parametrize("command,value,expected", [
    (["profile", "mobilenetv1_025"], ["4"], 4),
    (["bench", "mobilenetv1_025"], ["1", "32"], [1, 32]),
    (["train"], ["16"], 16),
    (["eval", "ck.pt"], ["16"], 16),
])
def test_batch_aliases_parse_the_same(command, value, expected):
    assert _parse(*command, "--batch-size", *value).batch_size == expected
    assert _parse(*command, "--batch", *value).batch_size == expected


def test_defaults_kept():
    assert _parse("info", "m").input_size == (224, 224)
    b = _parse("bench", "m")
    assert b.input_size == (224, 224) and b.batch_size == [1, 32] and b.json is None
    assert _parse("profile", "m").batch_size == 1 and _parse("eval", "c").batch_size == 128
    t = _parse("train")
    assert t.input_size is None and t.batch_size is None


def test_size_with_three_numbers_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        _parse("info", "m", "--input-size", "1", "2", "3")
    assert e.value.code == 2 and "expected N or H W" in capsys.readouterr().err


def test_train_size_and_batch_reach_the_recipe(capsys):
    from mobilenets.cli.train import main as train_main
    assert train_main(["train", "--input-size", "40", "--batch", "16", "--print-recipe"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "img_size = 40" in out and "batch_size = 16" in out
    assert train_main(["train", "--img-size", "40", "48", "--print-recipe"]) == 2
    assert "train takes a square input (--input-size N), got 40 48" in capsys.readouterr().err


def test_bench_rejects_non_square(capsys):
    assert main(["bench", "mobilenetv1_025", "--input-size", "64", "96", "--quiet"]) == 2
    assert "bench takes a square input" in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly():
    """`mobilenets list | head` under `set -o pipefail`: the command stops when the reader has
    closed the pipe, exit 0, no "Broken pipe" error (`true` reads nothing and exits at once, so the
    command always writes to a closed pipe; `head -2` is the everyday case)."""
    import subprocess
    import sys
    for reader in ("true", "head -2"):
        res = subprocess.run(["bash", "-e", "-o", "pipefail", "-c",
                              f"{sys.executable} -m mobilenets list --no-macs | {reader}"], capture_output=True, text=True)
        assert res.returncode == 0, (reader, res.stderr)
        assert "Broken pipe" not in res.stderr and "Traceback" not in res.stderr, (reader, res.stderr)
