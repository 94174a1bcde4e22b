"""A training run in its own process, for the kill -9 tests (tests/test_train_faults.py).

    python train_child.py RECIPE_JSON OUT_DIR MODE [K]

Prints ``SAVED <n> <epoch> <batch_in_epoch>`` after each complete checkpoint write. MODE
``write``: the K-th checkpoint write stops half-way through its temporary file, prints
``WRITING`` and waits to be killed. MODE ``run``: trains normally.
"""

import json
import os
import sys
import time

import torch

from mobilenets.train import Recipe, train
from mobilenets.train import loop
from mobilenets.weights.io import atomic_write

recipe, out, mode = Recipe.from_dict(json.loads(sys.argv[1])), sys.argv[2], sys.argv[3]
k_stop = int(sys.argv[4]) if len(sys.argv) > 4 else 0
torch.set_num_threads(1)
real = loop.save_checkpoint
calls = {"n": 0}


def half_written(tmp: str) -> None:
    with open(tmp, "wb") as f:
        f.write(b"PK\x03\x04" + b"\0" * 4096)  # the start of a zip, never finished
        f.flush()
        os.fsync(f.fileno())
    print("WRITING", flush=True)
    time.sleep(120)


def watched(obj, path):
    calls["n"] += 1
    if mode == "write" and calls["n"] == k_stop:
        atomic_write(path, half_written)
    result = real(obj, path)
    print(f"SAVED {calls['n']} {obj['epoch']} {obj['batch_in_epoch']}", flush=True)
    return result


loop.save_checkpoint = watched
train(recipe, out, progress=False, log=lambda s: None)
print("DONE", flush=True)
