"""The TuNAS search: a weight-sharing supernet trained on the user's data while a controller learns
which architecture of the space is most accurate at the latency target (Bender et al. 2020,
https://arxiv.org/abs/2008.06120; MobileNetV4's two-stage schedule, Qin et al. 2024,
https://arxiv.org/abs/2404.10518, Sec. 4).

Each iteration (TuNAS Sec. 3): a path for the weights (:func:`~.schedule.warmup_sample`: the
controller's sample, during the warm-up often the whole supernet) takes one optimizer step on a
train batch; then a fresh sample of the controller is scored on a batch of the held-out split
(top-1 accuracy, BatchNorm on batch statistics) and its latency read from the table; the reward
(TuNAS's absolute reward by default, MnasNet's as an option) takes one REINFORCE step (after the
RL delay; before it, only the baseline moves). The default schedule is MNv4's two stages: coarse
(depth and filters, every block an IB e4 k3), then fine (each depthwise slot, at the coarse
result's depth and filters), each half of the steps, each with its own controller.

The weights train with the library's optimizer and LR schedule (:mod:`mobilenets.train.optim`)
from the classification recipe of the data, and distillation from a teacher checkpoint is the
training engine's (:mod:`mobilenets.train.distill`). Under torchrun every rank samples its own
paths, gradients are averaged and the reward mean all-reduced into the controller's baseline.
A checkpoint (supernet, optimizer, controller, data position, every RNG) is written atomically
every ``checkpoint_seconds``; running the same command again resumes exactly.

The latency target is a number of ms or a reference model's latency (``target_model``). With
``feedback`` > 0 the table's predictions are corrected by measurements of the controller's most
likely architecture in the table's runtime (beside the reference), a few times per stage, and
the found architecture is measured at the end (:mod:`.feedback`).

With ``rerank`` the final candidates are re-ranked by short stand-alone training
(:mod:`.rerank` picks and trains them; :meth:`_Search.rerank` keeps their results in ``st``).

Why one module: the settings, the iteration's two steps, the re-ranking, the
checkpoint and the outputs share one state (``st``) that a resume restores as a whole.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..archs.spec import NetSpec
from .controller import ALL, Controller, distributed_mean
from .feedback import LatencyFeedback, feedback_steps
from .data import Batches, classification_splits, single_process
from .latency import LatencyTable
from .rewards import absolute_reward, check_target, mnas_reward
from .schedule import rl_enabled, rl_learning_rate, warmup_sample
from .space import SearchSpace
from .state import load_run_state
from .supernet import Supernet

REWARDS = ("absolute", "mnas")
CHECKPOINT = "search.pt"
RERANK_SETTINGS = ("rerank", "rerank_epochs", "rerank_share", "rerank_window")


@dataclass(frozen=True)
class SearchSettings:
    """What ``mobilenets search run`` takes (see its ``--help``)."""

    space: str
    table: str
    target_ms: Optional[float] = None
    data: str = "digits"
    out: str = "search"
    minutes: float = 60.0
    steps: Optional[int] = None
    seed: int = 0
    reward: str = "absolute"
    beta: float = -0.10
    w: float = -0.07
    two_stage: bool = True
    width_mult: Optional[float] = None
    batch_size: int = 64
    img_size: int = 64
    held_out: float = 0.2
    lr: Optional[float] = None
    teacher: Optional[str] = None
    distill_alpha: float = 0.5
    distill_temperature: float = 2.0
    checkpoint_seconds: float = 30.0
    bn_batches: int = 8
    coarse_op_mix: float = 0.5
    sandwich: bool = False
    target_model: Optional[str] = None
    feedback: int = 0
    feedback_seconds: float = 1.0
    rerank: int = 0
    rerank_epochs: int = 2
    rerank_share: float = 0.5
    rerank_window: float = 0.03

    def __post_init__(self):
        if self.reward not in REWARDS:
            raise ValueError(f"reward must be one of {', '.join(REWARDS)}, got {self.reward!r}")
        if (self.target_ms is None) == (self.target_model is None):
            raise ValueError("give the latency target as target_ms or as target_model (a model whose latency "
                             f"to match), exactly one; got target_ms={self.target_ms!r}, "
                             f"target_model={self.target_model!r}")
        if self.target_ms is not None and not (isinstance(self.target_ms, (int, float)) and self.target_ms > 0
                                               and math.isfinite(self.target_ms)):
            raise ValueError(f"target_ms must be a positive number of milliseconds, got {self.target_ms!r}")
        if self.feedback < 0:
            raise ValueError(f"feedback: expected measurements per stage >= 0, got {self.feedback}")
        if not self.feedback_seconds > 0:
            raise ValueError(f"feedback_seconds must be > 0, got {self.feedback_seconds}")
        if self.steps is not None and self.steps < 2:
            raise ValueError(f"steps must be >= 2 (one per stage at least), got {self.steps}")
        if not self.minutes > 0:
            raise ValueError(f"minutes must be > 0, got {self.minutes}")
        if not 0 <= self.coarse_op_mix <= 1:
            raise ValueError(f"coarse_op_mix must be a fraction in [0, 1], got {self.coarse_op_mix}")
        if not 0 < self.held_out < 1:
            raise ValueError(f"held_out must be a fraction in (0, 1), got {self.held_out}")
        if self.rerank < 0 or self.rerank == 1:
            raise ValueError(f"rerank: expected 0 (off) or at least 2 candidates to compare, got {self.rerank}")
        if self.rerank_epochs < 1:
            raise ValueError(f"rerank_epochs must be >= 1, got {self.rerank_epochs}")
        if not 0 < self.rerank_share < 1:
            raise ValueError(f"rerank_share must be a fraction of the minutes in (0, 1), got {self.rerank_share}")
        if not 0 < self.rerank_window < 1:
            raise ValueError(f"rerank_window must be a fraction in (0, 1), got {self.rerank_window}")

    @property
    def rl_minutes(self) -> float:
        """The part of ``minutes`` for the supernet and controller (the rest re-ranks)."""
        return self.minutes * (1 - self.rerank_share) if self.rerank else self.minutes


@dataclass
class SearchResult:
    spec: NetSpec
    predicted_ms: float
    val_top1: float
    steps: int
    seconds: float
    out: Path
    history: list = field(default_factory=list)
    target_ms: float = 0.0
    measured: Optional[dict] = None   # with feedback: the found architecture measured (beside the reference)
    rerank: Optional[dict] = None     # with rerank: the candidates, their held-out top-1 and the pick


# -- data ------------------------------------------------------------------------------------------

def search_data(s: SearchSettings):
    """``(weight-train split, held-out split, val set, classes, recipe, held-out batch size)`` of
    ``s.data`` (:func:`.data.classification_splits`)."""
    return classification_splits(s.data, s.img_size, s.batch_size, s.seed, s.held_out, s.lr)


# -- the search ------------------------------------------------------------------------------------

def cheapest_ms(space: SearchSpace, table: LatencyTable) -> float:
    """The predicted latency of the space's cheapest architecture: the smallest depth and filters
    of every stage, each block the (op, expansion) whose part is fastest at that width."""
    choice = space.canonical({d.name: 0 for d in space.decisions()})
    for i, st in enumerate(space.stages):
        choice[f"s{i}.depth"] = st.depths.index(min(st.depths))
        choice[f"s{i}.filters"] = st.filters.index(min(st.filters))
    choice = space.canonical(choice)
    best = table.predict(space.to_spec(choice))
    for name in [d.name for d in space.decisions() if d.name.endswith((".op", ".e"))]:
        n = len(next(d for d in space.decisions() if d.name == name).choices)
        for v in range(n):  # coordinate descent over the per-block choices (the parts are additive)
            trial = space.canonical({**choice, name: v})
            ms = table.predict(space.to_spec(trial))
            if ms < best:
                best, choice = ms, trial
    return best


def _to_full(space: SearchSpace, stage_space: SearchSpace, path: dict) -> dict:
    """A path of ``stage_space`` (coarse / fine, possibly with ALL) as a path of ``space`` (the
    decisions a stage space lacks, block slots past its fixed depth, do not matter: 0)."""
    full = {d.name: d.choices for d in space.decisions()}
    staged = {d.name: d.choices for d in stage_space.decisions()}
    out = {k: 0 for k in full}
    out.update((k, v if v == ALL else full[k].index(staged[k][v])) for k, v in path.items())
    return out


class _Search:
    def __init__(self, s: SearchSettings, progress: bool):
        from ..train.distributed import setup_distributed
        from ..train.optim import LRSchedule, create_optimizer
        from .spaces import load_space

        self.s, self.progress = s, progress
        self.out = Path(s.out)
        self.table = LatencyTable.load(s.table)
        space = load_space(s.space)
        if s.width_mult is not None:
            space = space.with_width(s.width_mult)
        self.table.check_for(space)
        self.space = space
        reference = _reference(s.target_model) if s.target_model is not None else None
        self.feedback = LatencyFeedback(self.table, s.target_ms, reference, s.feedback, s.feedback_seconds)
        self.target_ms = self.feedback.target_ms
        check_target(self.target_ms, cheapest_ms(space, self.table))
        torch.manual_seed(s.seed)
        self.train_ds, self.held_ds, self.val_ds, self.classes, self.recipe, held_bs = search_data(s)
        # torchrun's environment -> the gloo group, as training joins it (the supernet runs on CPU)
        self.dist = setup_distributed(self.recipe.replace(device="cpu"))
        if s.rerank and self.dist.enabled:   # refused before any step: each candidate trains in one process
            raise ValueError("rerank trains its candidates in one process: run the search under torchrun without "
                             "--rerank, then the same command with --rerank in one process (it resumes the finished "
                             "search and re-ranks)")
        self.train_batches = Batches(self.train_ds, s.batch_size, s.seed, self.dist)
        self.held_batches = Batches(self.held_ds, held_bs, s.seed + 1, self.dist)
        self.net = Supernet(space, num_classes=len(self.classes))
        self.opt = create_optimizer(self.net, self.recipe)
        # the search's steps as one "epoch", the recipe's warm-up as the same fraction of it
        r = self.recipe
        self.make_schedule = lambda steps: LRSchedule(r.replace(epochs=1, warmup_epochs=r.warmup_epochs / r.epochs), steps)
        self.distiller = _distiller(s, len(self.classes))
        self.latency_cache: dict[str, float] = {}

    # -- pieces ------------------------------------------------------------------------------
    def latency(self, spec: NetSpec) -> float:
        """The table's prediction of ``spec``, corrected by the measured feedback (if any)."""
        key = str(spec)
        if key not in self.latency_cache:
            self.latency_cache[key] = self.table.predict(spec)
        return self.feedback.latency(self.latency_cache[key])

    def reward(self, quality: float, latency: float) -> float:
        s = self.s
        return (absolute_reward(quality, latency, self.target_ms, s.beta) if s.reward == "absolute"
                else mnas_reward(quality, latency, self.target_ms, s.w))

    def weight_step(self, path: dict, lr: float) -> float:
        """One optimizer step on a train batch through ``path``; with ``sandwich`` the whole
        supernet's gradient on the same batch is added (BigNAS's sandwich rule, Yu et al. 2020,
        https://arxiv.org/abs/2003.11142, its largest child): measured on digit-clutter, the
        supernet without it ranked 10 trained networks with Spearman -0.13 / -0.01 against their
        stand-alone accuracy, undervaluing the deep ones (6-7 blocks per stage), whose last
        blocks only paths of that depth train."""
        self.net.train()
        x, y = self.train_batches.next()

        def loss_of(p: dict) -> torch.Tensor:
            self.net.set_path(p)
            logits = self.net(x)
            return self.distiller(logits, x, y) if self.distiller is not None else F.cross_entropy(logits, y)

        for g in self.opt.param_groups:
            g["lr"] = lr
        # Parameters off the path get no gradient (None), so the optimizer leaves them alone: no
        # momentum or weight-decay drift of weights this step did not use, and a resumed search
        # (whose optimizer starts with no gradients) updates exactly what the uninterrupted one does.
        self.opt.zero_grad(set_to_none=True)
        loss = loss_of(path)
        loss.backward()
        if self.s.sandwich:
            full = self.net.full_path()
            if path != full:
                loss_of(full).backward()
        if self.dist.enabled:  # every rank ran its own path: average the gradients over the ranks
            params = list(self.net.parameters())
            used = torch.tensor([float(p.grad is not None) for p in params])
            torch.distributed.all_reduce(used)
            for p, n in zip(params, used.tolist()):
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                torch.distributed.all_reduce(p.grad)
                p.grad /= self.dist.world
                if n == 0:
                    p.grad = None   # off every rank's path: as in one process
        self.opt.step()
        return loss.item()

    @torch.no_grad()
    def quality(self, path: dict) -> float:
        """Top-1 of ``path`` on one held-out batch, BatchNorm on batch statistics (TuNAS's RL
        step), dropout off."""
        self.net.train()
        for m in self.net.modules():
            if isinstance(m, nn.Dropout):
                m.eval()
        self.net.set_path(path)
        x, y = self.held_batches.next()
        return float((self.net(x).argmax(1) == y).float().mean())

    # -- checkpoint --------------------------------------------------------------------------
    def state(self, st: dict) -> dict:
        from ..train.checkpoint import get_rng_state

        return {"settings": asdict(self.s), "net": self.net.state_dict(), "opt": self.opt.state_dict(),
                "rng": get_rng_state(), "train_batches": self.train_batches.state(),
                "held_batches": self.held_batches.state(), **st}

    def save(self, st: dict) -> None:
        from ..train.checkpoint import save_checkpoint

        if self.dist.main:
            save_checkpoint(self.state(st), self.out / CHECKPOINT)

    def load(self) -> Optional[dict]:
        from ..train.checkpoint import set_rng_state

        # the budget and the re-ranking (a step after the search) may change on a resume
        ck = load_run_state(self.out / CHECKPOINT, asdict(self.s), ("minutes", "checkpoint_seconds") + RERANK_SETTINGS,
                            "a search", weights_only=False)
        if ck is None:
            return None
        self.net.load_state_dict(ck["net"])
        self.opt.load_state_dict(ck["opt"])
        set_rng_state(ck["rng"])
        self.train_batches.load(ck["train_batches"])
        self.held_batches.load(ck["held_batches"])
        return ck

    def mix_ops(self, ctrl: Controller, path: dict) -> dict:
        """The coarse stage's weight path with each block's op (not ALL) replaced, with
        probability ``coarse_op_mix``, by a uniformly random op of the full space.

        Why: the coarse stage fixes every block to IB k3, so without this the fine stage would
        start from shared weights that only ever ran IB k3 after the warm-up: measured on
        digit-clutter, the held-out accuracy fell from 0.84 to 0.13 when the fine stage began.
        Training the fine stage's ops during the coarse stage (as a one-shot supernet samples
        paths uniformly) hands it weights that work for every op. The controller's decisions and
        rewards are those of the coarse space; only the weight step's path changes. The
        uniforms come from the controller's stream, so a resumed search draws the same ones."""
        ops = [d for d in self.space.decisions() if d.name.endswith(".op")]
        u = ctrl.uniforms(2 * len(ops))
        out = dict(path)
        for i, d in enumerate(ops):
            if out[d.name] != ALL and float(u[2 * i]) < self.s.coarse_op_mix:
                out[d.name] = min(int(float(u[2 * i + 1]) * len(d.choices)), len(d.choices) - 1)
        return out

    # -- run ---------------------------------------------------------------------------------
    @staticmethod
    def stage_steps(total: int, stages: list, index: int) -> int:
        """Steps of stage ``index``: an equal share each, the remainder to the stages after the
        coarse one."""
        return total // len(stages) + (total % len(stages) if stages[index] != "coarse" else 0)

    def estimate_steps(self) -> int:
        """Steps that fit ``minutes``, from a few timed iterations (no update is kept): one untimed
        (first-call costs), two with the whole supernet as the weight path, three with random
        paths. TuNAS's warm-up trains the whole supernet with a probability falling from 1 to 0
        over the first 25 % of the steps (12.5 % of all steps on average), random-ish paths the
        rest, so a step costs about ``0.125 * full + 0.875 * random``."""
        import copy
        import random

        saved = copy.deepcopy(self.net.state_dict()), copy.deepcopy(self.opt.state_dict())
        rng = torch.get_rng_state()
        batches = self.train_batches.state(), self.held_batches.state()
        paths = random.Random(self.s.seed)

        def iteration(full: bool) -> float:
            t0 = time.perf_counter()
            sampled = self.space.sample(paths)
            self.weight_step(self.net.full_path() if full else sampled, 0.0)
            self.quality(self.space.sample(paths))
            return time.perf_counter() - t0

        iteration(True)
        full = sum(iteration(True) for _ in range(2)) / 2
        sampled = sum(iteration(False) for _ in range(3)) / 3
        self.net.load_state_dict(saved[0])
        self.opt.load_state_dict(saved[1])
        torch.set_rng_state(rng)
        self.train_batches.load(batches[0])
        self.held_batches.load(batches[1])
        per_step = 0.125 * full + 0.875 * sampled
        # the feedback's measurements (each ~15 s of export per network, then the timing) and the
        # final one come out of the same budget
        nets = 1 + (self.s.target_model is not None)
        measuring = (self.s.feedback * (1 if not self.s.two_stage else 2) + 1) * nets * (15 + self.s.feedback_seconds)
        budget = self.s.rl_minutes * 60 * 0.9 - (measuring if self.s.feedback else 0)
        return max(2, int(max(budget, 0.1 * self.s.rl_minutes * 60) / per_step))

    def run(self) -> SearchResult:
        from ..progress import progress_bar

        s = self.s
        ck = self.load()
        st = ck.get("search", {}) if ck else {}
        if not st:
            total = s.steps or self.estimate_steps()
            stages = ["coarse", "fine"] if s.two_stage else ["single"]
            st = {"total": total, "stages": stages, "stage": 0, "step": 0, "elapsed": 0.0, "coarse_choice": None,
                  "controller": None, "history": [], "probabilities": []}
        if "feedback" in st:
            self.feedback.load_state_dict(st["feedback"])
        t_start = time.perf_counter() - st["elapsed"]
        last_save = time.perf_counter()
        budget = s.rl_minutes * 60
        bar = progress_bar(st["total"], "search", enabled=self.progress and self.dist.main)
        if bar is not None and st["history"]:
            bar.update(len(st["history"]))  # resumed
        # one learning-rate schedule over the whole search: the fine stage continues the coarse
        # stage's shared weights, and a second LR warm-up from a high rate would undo them
        schedule = self.make_schedule(st["total"])
        while st["stage"] < len(st["stages"]):
            name = st["stages"][st["stage"]]
            stage_space = (self.space.coarse() if name == "coarse" else
                           self.space.fine(st["coarse_choice"]) if name == "fine" else self.space)
            n_steps = self.stage_steps(st["total"], st["stages"], st["stage"])
            ctrl = Controller(stage_space.decisions(), seed=s.seed + 7919 * st["stage"])
            if st["controller"] is not None:
                ctrl.load_state_dict(st["controller"])
            # the step of the whole search this stage starts at, for the one LR schedule
            offset = sum(self.stage_steps(st["total"], st["stages"], k) for k in range(st["stage"]))
            # the warm-up's fallbacks: ALL for every op decision, even one the stage fixes (the
            # coarse stage's IB k3 would otherwise leave the start depthwise slots and the outer
            # ring of the 5x5 kernels untrained for the fine stage to start from), the widest
            # filters for the filter decisions this stage searches
            sizes = {d.name: len(d.choices) for d in stage_space.decisions()}
            fallback = {k: (v if v == ALL else sizes[k] - 1) for k, v in self.net.warmup_fallback().items()
                        if k in sizes and (v == ALL or sizes[k] > 1)}
            measure_at = set(feedback_steps(n_steps, s.feedback))
            while st["step"] < n_steps:
                step = st["step"]
                if time.perf_counter() - t_start > budget:
                    break
                if step in measure_at:   # the table corrected where the controller is heading
                    self.feedback.calibrate(stage_space.to_spec(ctrl.most_likely()), main=self.dist.main,
                                            stage=name, step=step)
                    st["feedback"] = self.feedback.state_dict()
                w_path = _to_full(self.space, stage_space, warmup_sample(ctrl, step, n_steps, fallback))
                if name == "coarse" and s.coarse_op_mix > 0:
                    w_path = self.mix_ops(ctrl, w_path)
                loss = self.weight_step(w_path, schedule(offset + step))
                rl_path = ctrl.sample()
                spec = stage_space.to_spec(rl_path)
                q, lat = self.quality(_to_full(self.space, stage_space, rl_path)), self.latency(spec)
                r = self.reward(q, lat)
                if rl_enabled(step, n_steps):
                    adv = ctrl.step(rl_path, r, lr=rl_learning_rate(step, n_steps))
                else:
                    ctrl.update_baseline(distributed_mean(r))
                    adv = None
                st["history"].append({"stage": name, "step": step, "loss": loss, "quality": q, "latency_ms": lat,
                                      "reward": r, "advantage": adv, "entropy": ctrl.entropy(),
                                      "latency_factor": self.feedback.factor})
                if step % max(1, n_steps // 25) == 0 or step == n_steps - 1:
                    st["probabilities"].append({"stage": name, "step": step, "p": ctrl.probabilities()})
                st["step"] += 1
                st["controller"] = ctrl.state_dict()
                st["elapsed"] = time.perf_counter() - t_start
                if bar is not None:
                    bar.update(1)
                if time.perf_counter() - last_save >= s.checkpoint_seconds:
                    self.save({"search": st})
                    last_save = time.perf_counter()
            if name == "coarse":
                st["coarse_choice"] = ctrl.most_likely()
            st["final_choice"] = ctrl.most_likely()
            st["final_probabilities"] = ctrl.probabilities()
            st["final_stage"] = name
            st["stage"] += 1
            st["step"], st["controller"] = 0, None
            self.save({"search": st})
            if time.perf_counter() - t_start > budget and st["stage"] < len(st["stages"]):
                st["stage"] = len(st["stages"])  # out of time: the coarse result stands, no fine stage
        if bar is not None:
            bar.close()
        final_space = (self.space.fine(st["coarse_choice"]) if st["final_stage"] == "fine" else
                       self.space.coarse() if st["final_stage"] == "coarse" else self.space)
        spec = final_space.to_spec(st["final_choice"])
        if self.dist.enabled:
            st["replicas_identical"] = self.check_replicas()
        if s.rerank:
            spec = self.rerank(st, final_space, spec, t_start)
        val = self.evaluate(self.space.encode(spec))
        if s.feedback and self.dist.main and st.get("final_measured", {}).get("spec") != str(spec):
            st["final_measured"] = self.feedback.measure_spec(spec)
        elapsed = time.perf_counter() - t_start
        result = SearchResult(spec, self.table.predict(spec), val, sum(1 for _ in st["history"]), elapsed, self.out,
                              st["history"], self.target_ms, st.get("final_measured"), st.get("rerank"))
        if self.dist.main:
            write_outputs(result, st, self.s, self.table)
        return result

    def rerank(self, st: dict, final_space: SearchSpace, found: NetSpec, t_start: float) -> NetSpec:
        """The search's last step with ``rerank`` (:mod:`.rerank`): the final controller's
        candidates trained alone for ``rerank_epochs`` each on the weight split, scored on the
        held-out split; the best one is the found architecture. Stops starting candidates when the
        next one would end past ``minutes`` (at least two are trained); every finished candidate
        is in the checkpoint, and an interrupted one resumes from its ``last.pt``."""
        from ..data import DataBundle
        from ..progress import progress_bar
        from .data import data_recipe
        from .rerank import best_candidate, rerank_candidates, train_candidate

        s = self.s
        rr = st.setdefault("rerank", {})
        if "candidates" not in rr:
            probs = st.get("final_probabilities") or {}
            if not probs:  # a search checkpointed before the probabilities were kept: the pick alone
                probs = {d.name: [float(i == st["final_choice"][d.name]) for i in range(len(d.choices))]
                         for d in final_space.decisions()}
            cands = rerank_candidates(final_space, probs, self.latency, self.target_ms, s.rerank, s.rerank_window,
                                      seed=s.seed)
            rr.update(candidates=[str(c) for c in cands], results=[], epochs=s.rerank_epochs,
                      window=s.rerank_window, predicted_ms=[self.latency(c) for c in cands], controller_pick=str(found))
            if not cands:
                rr["note"] = (f"no architecture of the final controller within {100 * s.rerank_window:g} % of the "
                              f"target ({self.target_ms:.4g} ms); the controller's pick stands")
            self.save({"search": st})
        recipe = data_recipe(s.data).replace(epochs=s.rerank_epochs, seed=s.seed, img_size=s.img_size,
                              **({"lr": s.lr} if s.lr is not None else {}))
        data = DataBundle(train=self.train_ds, val=self.held_ds, classes=list(self.classes))
        budget = s.minutes * 60
        todo = rr["candidates"][len(rr["results"]):]
        bar = progress_bar(len(rr["candidates"]), "re-rank", enabled=self.progress)
        if bar is not None and rr["results"]:
            bar.update(len(rr["results"]))
        for spec_str in todo:
            i = len(rr["results"])
            per = max((r["seconds"] for r in rr["results"]), default=0.0)
            if i >= 2 and time.perf_counter() - t_start + per > budget:
                rr["stopped"] = f"out of time after {i} of {len(rr['candidates'])} candidates"
                break
            rr["results"].append(train_candidate(NetSpec.from_string(spec_str), recipe, data,
                                                 self.out / "rerank" / f"cand{i:02d}"))
            st["elapsed"] = time.perf_counter() - t_start
            self.save({"search": st})
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        best = best_candidate(rr["results"])
        rr["pick"] = best["spec"] if best else str(found)
        return NetSpec.from_string(rr["pick"])

    def check_replicas(self) -> int:
        """Every rank holds the same supernet (a float64 checksum of every parameter, all-gathered);
        a RuntimeError if not. Returns the number of ranks compared."""
        total = torch.stack([p.detach().double().sum() for p in self.net.parameters()]).sum().reshape(1)
        sums = [torch.zeros_like(total) for _ in range(self.dist.world)]
        torch.distributed.all_gather(sums, total)
        if any(not torch.equal(x, sums[0]) for x in sums):
            raise RuntimeError(f"supernet replicas diverged across ranks: checksums {[float(x) for x in sums]}")
        return self.dist.world

    def evaluate(self, choice: dict) -> float:
        """Top-1 of the found architecture with the supernet's weights on the val set, its
        BatchNorm statistics re-estimated on training batches first."""
        self.net.set_path(choice)
        batches = Batches(self.train_ds, self.s.batch_size, self.s.seed + 2, self.dist)
        self.net.recalibrate_bn(batches.next() for _ in range(self.s.bn_batches))
        self.net.eval()
        loader = Batches(self.val_ds, min(256, len(self.val_ds)), 0, single_process())
        correct = n = 0
        with torch.no_grad():
            for _ in range(math.ceil(len(self.val_ds) / loader.bs)):
                x, y = loader.next()
                correct += int((self.net(x).argmax(1) == y).sum())
                n += len(y)
        return correct / max(1, n)


def _reference(source: str) -> NetSpec:
    """``target_model``: a registry name, a spec string or a spec JSON file, as a NetSpec."""
    from ..models.registry import model_spec

    spec = model_spec(source)
    if not isinstance(spec, NetSpec):
        raise ValueError(f"target_model {source!r}: expected a MobileNet V1-V4 architecture (a NetSpec) that the "
                         f"latency table can predict, got a {type(spec).__name__}")
    return spec


def _distiller(s: SearchSettings, num_classes: int) -> Optional[Callable]:
    if s.teacher is None:
        return None
    from ..train.distill import Distiller, load_teacher

    teacher = load_teacher(s.teacher, num_classes)
    return Distiller(teacher, lambda logits, y: F.cross_entropy(logits, y), s.distill_alpha, s.distill_temperature)


def write_outputs(result: SearchResult, st: dict, s: SearchSettings, table: LatencyTable) -> None:
    """``found.txt`` (the spec string), ``found.json`` (the spec), ``history.json`` (every step,
    the controller's probabilities over time) and ``search.png``."""
    from ..weights.io import atomic_write

    out = result.out
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "found.txt", lambda tmp: Path(tmp).write_text(str(result.spec) + "\n"))
    atomic_write(out / "found.json", lambda tmp: Path(tmp).write_text(json.dumps(result.spec.to_dict(), indent=1)))
    summary = {"spec": str(result.spec), "predicted_ms": result.predicted_ms, "target_ms": result.target_ms,
               "target_model": s.target_model, "measured": result.measured,
               "feedback": st.get("feedback", {}).get("log", []),
               "val_top1_supernet": result.val_top1, "steps": result.steps, "seconds": result.seconds,
               "runtime": table.meta["runtime"], "precision": table.meta["precision"],
               "replicas_identical": st.get("replicas_identical", 1), "rerank": result.rerank,
               "settings": asdict(s), "history": st["history"], "probabilities": st["probabilities"]}
    atomic_write(out / "history.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1, default=float)))
    from .plots import plot_search

    plot_search(summary, out / "search.png")


def run_search(settings: SearchSettings, progress: bool = True) -> SearchResult:
    """Run (or resume, from ``settings.out``) a search; see the module docstring."""
    return _Search(settings, progress).run()


__all__ = ["REWARDS", "SearchResult", "SearchSettings", "cheapest_ms", "run_search"]
