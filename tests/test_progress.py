"""Progress output (mobilenets.progress): a bar on a terminal, a few complete lines anywhere else,
in every long command (train, data, bench)."""

import io
import re
import subprocess
import sys

import pytest

from mobilenets.progress import ProgressLines, progress_bar, progress_iter


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_redirected_progress_is_four_complete_lines():
    out = io.StringIO()
    bar = progress_bar(2000, "digit-scenes train", stream=out)
    assert isinstance(bar, ProgressLines)
    bar.set_postfix_str("loss 0.123")
    for _ in range(2000):
        bar.update(1)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text and text.endswith("\n")
    assert text.splitlines() == [f"digit-scenes train: {n}/2000 ({p}%) loss 0.123"
                                 for n, p in ((500, 25), (1000, 50), (1500, 75), (2000, 100))]
    out = io.StringIO()  # jumps (a resumed epoch) and tiny totals: still one line per quarter reached
    bar = progress_bar(3, "epoch 2/5", stream=out)
    bar.update(2)
    bar.update(1)
    assert out.getvalue().splitlines() == ["epoch 2/5: 2/3 (66%)", "epoch 2/5: 3/3 (100%)"]
    assert progress_bar(10, "x", enabled=False, stream=out) is None
    out = io.StringIO()
    assert list(progress_iter(iter(range(8)), "jobs", stream=out)) == list(range(8))
    assert len(out.getvalue().splitlines()) == 4


def test_a_terminal_gets_a_tqdm_bar():
    tqdm = pytest.importorskip("tqdm")
    bar = progress_bar(10, "x", stream=_Terminal())
    assert isinstance(bar, tqdm.tqdm)
    bar.close()


def test_the_training_loop_progress_is_lines_when_stderr_is_a_file(monkeypatch):
    from mobilenets.train import reporting
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    bar = reporting.progress_bar(40, "epoch 1/3", True)  # loop.py's call
    for _ in range(40):
        bar.update(1)
        bar.set_postfix_str("loss 1.000 lr 1.00e-03")
    bar.close()
    assert "\r" not in err.getvalue() and len(err.getvalue().splitlines()) == 4
    assert reporting.progress_bar(40, "epoch 1/3", False) is None


def _run(argv, tmp_path, timeout=600):
    r = subprocess.run([sys.executable, "-m", "mobilenets", *argv], cwd=tmp_path, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stderr


def _progress_lines(err: str, desc: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith(desc)]


@pytest.mark.parametrize("fmt", ["coco", "voc"])
def test_data_command_into_a_pipe(fmt, tmp_path):
    err = _run(["data", "digit-scenes", "--format", fmt, "--out", str(tmp_path / "d"), "--train-images", "40",
                "--val-images", "8", "--input-size", "64", "--workers", "0"], tmp_path)
    assert "\r" not in err
    assert _progress_lines(err, "digit-scenes train") == [f"digit-scenes train: {n}/40 ({p}%)"
                                                          for n, p in ((10, 25), (20, 50), (30, 75), (40, 100))]
    assert len(_progress_lines(err, "digit-scenes val")) == 4
    assert len(err.splitlines()) == 8  # nothing else


def test_train_command_into_a_pipe(tmp_path):
    err = _run(["train", "--model", "mobilenetv3_small_050", "--data", "digits", "--epochs", "2", "--img-size", "32",
                "--batch-size", "64", "--set", "val_fraction=0.5", "--out", str(tmp_path / "run")], tmp_path)
    assert "\r" not in err
    for epoch in (1, 2):
        lines = _progress_lines(err, f"epoch {epoch}/2")
        assert 1 <= len(lines) <= 4 and lines[-1].startswith(f"epoch {epoch}/2: ")
        assert re.search(r"\(100%\) loss \d", lines[-1])


def test_bench_command_into_a_pipe(tmp_path):
    err = _run(["bench", "mobilenetv2_035", "--batch", "1", "--threads", "1", "--size", "64",
                "--paths", "eager", "--repeats", "2"], tmp_path)
    assert "\r" not in err and 1 <= len(err.splitlines()) <= 6  # its log lines, complete
