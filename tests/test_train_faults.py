"""Faults in training: kill -9 mid-epoch and mid-checkpoint-write, periodic checkpoints
(``ckpt_every_steps``), a disk that fills up while writing. Each time the last complete
checkpoint is intact and loads, and ``--resume`` reproduces the uninterrupted run exactly."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mobilenets.train import Recipe, load_checkpoint, train
from mobilenets.train import loop as loop_mod
from mobilenets.train.checkpoint import CheckpointWriteError
from test_train import metrics, same_state  # the same comparison as the resume tests

CHILD = Path(__file__).parent / "helpers" / "train_child.py"


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the child runs on one thread too: bitwise the same arithmetic
    yield
    torch.set_num_threads(n)


def recipe(**kw) -> Recipe:
    # 96 images / 16 per batch: 6 steps an epoch, 12 in all; last.pt every 2 steps
    base = dict(model="mobilenetv3_small_050", dataset="fake", fake_samples=96, fake_classes=4, img_size=32,
                epochs=2, batch_size=16, lr=0.01, warmup_epochs=0.5, label_smoothing=0.1, seed=3,
                ema_decay=0.9, reprob=0.25, ckpt_every_steps=2)
    base.update(kw)
    return Recipe(**base)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    torch.set_num_threads(1)
    return train(recipe(), tmp_path_factory.mktemp("full"), progress=False, log=lambda s: None)


def _assert_resume_is_exact(out: Path, full) -> dict:
    ck = load_checkpoint(out / "last.pt")  # intact: it loads
    resumed = train(recipe(), out, resume=out / "last.pt", progress=False, log=lambda s: None)
    assert resumed.exit_code == 0
    assert metrics(resumed.history) == metrics(full.history)
    assert same_state(resumed.model, full.model) and same_state(resumed.ema, full.ema)
    return ck


def test_ckpt_every_steps_writes_mid_epoch_and_resume_is_exact(tmp_path, monkeypatch, full):
    written = []
    real = loop_mod.save_checkpoint

    def spy(obj, path):
        written.append((obj["epoch"], obj["batch_in_epoch"]))
        if (obj["epoch"], obj["batch_in_epoch"]) == (1, 4):  # keep a copy from the middle of epoch 2
            real(obj, tmp_path / "snap" / "last.pt")
        return real(obj, path)

    monkeypatch.setattr(loop_mod, "save_checkpoint", spy)
    train(recipe(), tmp_path / "run", progress=False, log=lambda s: None)
    # every 2 steps mid-epoch (not at an epoch's last step: the epoch's end writes), plus each
    # epoch's end (epoch index after it, batch 0, for last.pt and best.pt)
    assert [w for w in written if w[1]] == [(0, 2), (0, 4), (1, 2), (1, 4)]
    monkeypatch.setattr(loop_mod, "save_checkpoint", real)
    _assert_resume_is_exact(tmp_path / "snap", full)


def _child(tmp_path: Path, mode: str, k: int = 0) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(CHILD), json.dumps(recipe().to_dict()), str(tmp_path), mode,
                             str(k)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _kill_after(proc: subprocess.Popen, marker, timeout: float = 120) -> list[str]:
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if marker(line):
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return lines


def test_kill_9_mid_checkpoint_write_keeps_the_last_complete_one(tmp_path, full):
    # writes: last.pt at batches 2, 4; last.pt and best.pt after epoch 1; the 5th (last.pt at
    # epoch 2, batch 2) is killed half-way through its temporary file
    proc = _child(tmp_path, "write", k=5)
    lines = _kill_after(proc, lambda line: line.startswith("WRITING"))
    assert proc.returncode == -signal.SIGKILL, (lines, proc.stderr.read())
    assert lines[-2] == "SAVED 4 1 0", lines  # the last complete write: after epoch 1
    assert list(tmp_path.glob(".last.pt.*.tmp")), "the half-written temporary file is there"
    ck = _assert_resume_is_exact(tmp_path, full)
    assert (ck["epoch"], ck["batch_in_epoch"]) == (1, 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_kill_9_at_a_random_point_then_resume_is_exact(tmp_path, full, seed):
    rnd = random.Random(seed)
    k = rnd.randint(1, 5)  # after the k-th complete write, a little later: mid-step, mid-epoch
    delay = rnd.uniform(0.0, 0.3)
    proc = _child(tmp_path, "run")

    def marker(line):
        if line.startswith(f"SAVED {k} "):
            import time
            time.sleep(delay)
            return True
        return False

    lines = _kill_after(proc, marker)
    assert proc.returncode == -signal.SIGKILL, (lines, proc.stderr.read())
    _assert_resume_is_exact(tmp_path, full)


def test_disk_full_while_writing_is_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real_save = torch.save
    calls = {"n": 0}

    def full_disk(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # the third write: part of the file, then ENOSPC
            with open(f, "wb") as fh:
                fh.write(b"PK\x03\x04partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", full_disk)
    before = {}
    real_ckpt = loop_mod.save_checkpoint

    def remember(obj, path):
        out = real_ckpt(obj, path)
        before[Path(path).name] = Path(path).read_bytes()
        return out

    monkeypatch.setattr(loop_mod, "save_checkpoint", remember)
    with pytest.raises(CheckpointWriteError) as e:
        train(recipe(ema_decay=0.0), tmp_path, progress=False, log=lambda s: None)
    msg = str(e.value)
    assert "last.pt" in msg and "No space left on device" in msg and "previous last.pt is kept" in msg
    assert (tmp_path / "last.pt").read_bytes() == before["last.pt"]  # untouched
    monkeypatch.setattr(torch, "save", real_save)
    load_checkpoint(tmp_path / "last.pt")
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))  # no debris


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(out: Path, *extra: str, timeout: float = 180) -> subprocess.CompletedProcess:
    r = recipe(epochs=3, dist_timeout_s=60).to_dict()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           str(Path(__file__).parent / "helpers" / "ddp_child.py"), json.dumps(r), str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"))


def test_ddp_rank_killed_stops_the_job_naming_the_rank_then_resume_works(tmp_path):
    import time
    t0 = time.time()
    # 3 steps an epoch per rank; rank 1 kills itself with SIGKILL at its 9th step (the last of
    # epoch 3), after last.pt was written at step 8 (ckpt_every_steps=2): no hang, a bounded stop
    p = _torchrun(tmp_path, "1", "9")
    elapsed = time.time() - t0
    assert p.returncode != 0 and elapsed < 150, (p.returncode, elapsed)
    summary = p.stderr[p.stderr.rfind("Root Cause"):]
    assert "rank      : 1" in summary and "exitcode  : -9" in summary, p.stderr[-3000:]
    ck = load_checkpoint(tmp_path / "last.pt")  # the mid-epoch checkpoint of step 8 is intact
    assert (ck["epoch"], ck["batch_in_epoch"], ck["world_size"]) == (2, 2, 2)
    done = _torchrun(tmp_path, "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0 exit 0 epochs 3" in done.stdout


# --- a resume that cannot continue its checkpoint is refused, and nothing is rewritten ------------
def _finished_run(tmp_path) -> Path:
    """A finished 3-epoch run whose best.pt is from an earlier epoch than last.pt."""
    r = recipe(epochs=3, ckpt_every_steps=0, ema_decay=0.0)
    out = tmp_path / "run"
    real = loop_mod.save_checkpoint

    res = train(r, out, progress=False)
    assert res.exit_code == 0 and len(res.history) == 3
    # make best.pt an earlier epoch than last.pt, as it usually is (the run's best can be its last)
    ck = load_checkpoint(out / "last.pt")
    ck1 = dict(ck, epoch=1, step=6, history=ck["history"][:1])
    real(ck1, out / "best.pt")
    return out


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_resume_from_best_into_its_own_run_is_refused_naming_last(tmp_path):
    out = _finished_run(tmp_path)
    before = _snapshot(out)
    r = Recipe.from_dict(load_checkpoint(out / "best.pt")["recipe"]).replace(epochs=5)
    with pytest.raises(loop_mod.TrainingError, match=r"best\.pt is at epoch 1 .* went further: .*last\.pt is at epoch 3"
                                                     r".*resume from .*last\.pt.*--out DIR"):
        train(r, out, resume=out / "best.pt", progress=False)
    assert _snapshot(out) == before, "a refused resume must not touch the run's files"


def test_resume_asking_for_no_more_epochs_is_refused(tmp_path, capsys):
    """The reported case: ``--resume best.pt --epochs 1`` on a finished run exited 0 and rewrote
    the run's metrics down to the checkpoint's epochs."""
    from mobilenets.cli import main
    out = _finished_run(tmp_path)
    before = _snapshot(out)
    for ck, epochs in (("best.pt", "1"), ("last.pt", "3"), ("last.pt", "2")):
        assert main(["train", "--resume", str(out / ck), "--epochs", epochs, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "nothing left to train" in err and "nothing was written" in err, err
    assert main(["train", "--resume", str(out / "last.pt"), "--no-progress"]) == 2  # finished, same epochs
    assert _snapshot(out) == before


def test_resume_from_best_into_a_new_folder_branches(tmp_path):
    out = _finished_run(tmp_path)
    before = _snapshot(out)
    r = Recipe.from_dict(load_checkpoint(out / "best.pt")["recipe"])
    res = train(r, tmp_path / "branch", resume=out / "best.pt", progress=False)
    assert res.exit_code == 0 and [h["epoch"] for h in res.history] == [1, 2, 3]
    assert _snapshot(out) == before
    # and last.pt of the run itself continues it
    res = train(r.replace(epochs=4), out, resume=out / "last.pt", progress=False)
    assert res.exit_code == 0 and [h["epoch"] for h in res.history] == [1, 2, 3, 4]
