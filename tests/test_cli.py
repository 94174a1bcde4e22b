"""The command-line interface, called in-process and once as a subprocess."""

import json
import subprocess
import sys

import pytest

from mobilenets.cli import main


def test_list_table_and_json(capsys):
    assert main(["list", "mobilenetv4*", "--no-macs"]) == 0
    out = capsys.readouterr().out
    import mobilenets
    for name in mobilenets.list_models("mobilenetv4*"):
        assert name in out
    assert "mobilenetv2_100" not in out
    line = next(ln for ln in out.splitlines() if ln.startswith("mobilenetv4_conv_small "))
    assert "3.774" in line
    assert main(["list", "mobilenetv3_small*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    row = next(r for r in rows if r["name"] == "mobilenetv3_small_100")
    assert row == {"name": "mobilenetv3_small_100", "family": "mobilenetv3", "params_m": 2.543,
                   "macs_m_224": pytest.approx(56.5, abs=0.5)}


def test_list_unknown_pattern(capsys):
    assert main(["list", "resnet*"]) == 2
    assert "no model matches 'resnet*'" in capsys.readouterr().err


def test_info_square_and_non_square(capsys):
    assert main(["info", "mobilenetv4_conv_small"]) == 0
    out = capsys.readouterr().out
    assert "960x7x7" in out and "3.774 M" in out and "arxiv.org/abs/2404.10518" in out
    assert main(["info", "mobilenetv3_large_100", "--input-size", "193", "161"]) == 0
    out = capsys.readouterr().out
    assert "960x7x6" in out
    stage_line = next(ln for ln in out.splitlines() if ln.startswith("stages.6"))
    assert stage_line.split()[-1] == "32"


def test_user_errors_exit_2_without_traceback(capsys):
    assert main(["info", "mobilenetv4_conv_smal"]) == 2
    err = capsys.readouterr().err
    assert "did you mean mobilenetv4_conv_small" in err and "Traceback" not in err
    assert main(["info", "mobilenetv2_100", "--input-size", "16", "16"]) == 2
    assert "expected input of shape (N, 3, H, W) with H, W >= 32" in capsys.readouterr().err
    assert main([]) == 2


def test_console_entry_point():
    r = subprocess.run([sys.executable, "-m", "mobilenets", "list", "mobilenetv1*", "--no-macs"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "mobilenetv1_100" in r.stdout and "4.232" in r.stdout
