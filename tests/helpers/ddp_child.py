"""One rank of a DDP training run under torchrun, for tests/test_train_faults.py.

    torchrun --nproc_per_node=2 ddp_child.py RECIPE_JSON OUT_DIR [KILL_RANK KILL_AT_STEP] [--resume]

The rank KILL_RANK kills itself with SIGKILL at its KILL_AT_STEP-th loss computation.
"""

import json
import os
import signal
import sys

import torch

from mobilenets.tasks.classification import ClassificationTask
from mobilenets.train import Recipe, train
from mobilenets.train.loop import TrainingError

args = [a for a in sys.argv[1:] if a != "--resume"]
recipe, out = Recipe.from_dict(json.loads(args[0])), args[1]
kill_rank, kill_at = (int(args[2]), int(args[3])) if len(args) > 3 else (-1, 0)
torch.set_num_threads(1)
rank = int(os.environ.get("RANK", "0"))
calls = {"n": 0}


class Dying(ClassificationTask):
    """Classification whose loss kills this rank at its KILL_AT_STEP-th computation."""

    def prepare(self, recipe, num_classes, teacher):
        super().prepare(recipe, num_classes, teacher)
        crit = self.criterion

        def f(logits, x, y):
            calls["n"] += 1
            if rank == kill_rank and calls["n"] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return crit(logits, x, y)
        self.criterion = f


resume = os.path.join(out, "last.pt") if "--resume" in sys.argv else None
try:
    res = train(recipe, out, resume=resume, progress=False, task=Dying())
except TrainingError as e:  # as the CLI reports it
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)
print(f"rank {rank} exit {res.exit_code} epochs {len(res.history)}", flush=True)
sys.exit(res.exit_code)
