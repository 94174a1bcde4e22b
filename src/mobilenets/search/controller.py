"""The TuNAS controller: one independent categorical distribution per search decision, trained
with REINFORCE (its rewards: :mod:`.rewards`; its schedule and warm-up: :mod:`.schedule`).

TuNAS (Bender et al. 2020, "Can weight sharing outperform random architecture search? An
investigation with TuNAS", https://arxiv.org/abs/2008.06120) samples one path of a weight-shared
supernet per step, scores it on a held-out batch, and moves the controller's logits by REINFORCE
with an exponential-moving-average baseline. The constants below are the paper's and those of its
public implementation (google-research/tunas, ``mobile_architecture_search.py``): Adam with
beta1 = 0, beta2 = 0.999, eps = 1e-8; a zero-debiased EMA baseline with momentum 0.95 over the
mean reward of all replicas; advantage = reward - baseline; RL delayed and op / filter warm-up
over the first 25 % of the steps; the RL learning rate grown 10x over the rest of the search
(those last two: :mod:`.schedule`).

Everything here is pure PyTorch on a handful of scalars: it knows decisions by name and choice
index only, so the search space (:mod:`.space`) and the supernet stay separate.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from .rewards import finite, positive

__all__ = ["ALL", "Decision", "Controller", "distributed_mean"]

# TuNAS's default RL learning rate is 0.0003 per 256 images of the training batch
# (``rl_learning_rate`` flag, scaled by train_batch_size / 256), i.e. 0.0048 at its batch of 4096.
DEFAULT_LR = 0.0003 * 4096 / 256

# The value :func:`.schedule.warmup_sample` gives a decision whose every choice is enabled at once
# (TuNAS's op warm-up). A string, not an index, so using it to index a choice list fails loudly.
ALL = "all"

Sample = Mapping[str, int]
_SCALARS = (str, int, float, bool, type(None))


def _printable(value: Any) -> bool:
    """A choice value prints to a spec string / JSON: a scalar, or a tuple of printable values."""
    if isinstance(value, tuple):
        return all(_printable(v) for v in value)
    return isinstance(value, _SCALARS)


@dataclass(frozen=True)
class Decision:
    """One categorical choice of a search space (a stage's depth, a block's kernel, ...).

    Attributes:
        name: unique within a space; the key of the controller's samples.
        choices: the values, at least one; printable (scalars or tuples of them) and distinct, as
            each becomes part of a spec string. A sample holds the *index* into this tuple.
    """

    name: str
    choices: tuple

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Decision.name: expected a non-empty string, got {self.name!r}")
        if not isinstance(self.choices, tuple):
            raise ValueError(f"Decision {self.name!r}: choices must be a tuple, got "
                             f"{type(self.choices).__name__} {self.choices!r}")
        if not self.choices:
            raise ValueError(f"Decision {self.name!r}: expected at least 1 choice, got none")
        for c in self.choices:
            if not _printable(c):
                raise ValueError(f"Decision {self.name!r}: choice {c!r} ({type(c).__name__}) is not "
                                 "printable; expected str, int, float, bool, None or a tuple of them")
        if len({repr(c) for c in self.choices}) != len(self.choices):
            raise ValueError(f"Decision {self.name!r}: choices must be distinct, got {self.choices!r}")


def _world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) when none is initialized."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def distributed_mean(values: Union[float, Sequence[float]]) -> float:
    """The mean of ``values`` over every rank: an all-reduce (sum and count, float64) when
    ``torch.distributed`` is initialized with more than one process, the local mean otherwise.

    TuNAS averages the reward over all replicas (a cross-replica sum divided by the number of
    shards) before it enters the baseline, so every replica keeps the same baseline while each
    scores its own path. Sum and count travel together, so ranks with different numbers of
    samples still give the mean over all samples.

    Args:
        values: this rank's rewards (one or several).
    """
    vals = [float(v) for v in values] if isinstance(values, (list, tuple)) else [float(values)]
    if not vals:
        raise ValueError("distributed_mean: expected at least one value, got an empty sequence")
    stats = torch.tensor([math.fsum(vals), float(len(vals))], dtype=torch.float64)
    if _world()[1] > 1:
        torch.distributed.all_reduce(stats, op=torch.distributed.ReduceOp.SUM)
    return float(stats[0] / stats[1])


class Controller:
    """An independent categorical distribution per decision, trained with REINFORCE as TuNAS does
    (Bender et al. 2020, https://arxiv.org/abs/2008.06120).

    Logits start at 0 (uniform; TuNAS's zeros initializer). Each :meth:`step` folds the mean
    reward into a zero-debiased EMA baseline (momentum ``baseline_decay``), takes the advantage
    ``reward - baseline`` of each sampled path and applies one Adam step (beta1 = 0, beta2 = 0.999,
    eps = 1e-8) to ``-mean(advantage * log p(path)) - entropy_weight * entropy``.

    Under ``torch.distributed`` (torchrun; gloo on CPU) every rank holds the same controller and
    samples its own path: all ranks draw from one shared random stream, each keeping its own
    rank's draw, so the streams (and with them the checkpoints) stay identical across ranks;
    :meth:`step` all-reduces the reward mean into the baseline and averages the gradients, so
    the logits stay identical too. Every rank must call :meth:`sample` / :meth:`step` equally often.

    Args:
        decisions: the search space's decisions, names unique.
        lr: Adam's learning rate (TuNAS: 0.0003 per 256 training images; the default is its
            value at batch 4096). :meth:`step` takes a per-step ``lr``
            (:func:`.schedule.rl_learning_rate`).
        baseline_decay: the EMA momentum of the baseline, in [0, 1).
        seed: seeds the controller's own random stream; None: a random seed. Under torchrun give
            every rank the same seed (the stream is shared, see above).
        entropy_weight: weight of an entropy bonus (TuNAS's ``rl_entropy_regularization``,
            default 0), >= 0.
    """

    def __init__(self, decisions: Sequence[Decision], lr: float = DEFAULT_LR,
                 baseline_decay: float = 0.95, seed: Optional[int] = None,
                 entropy_weight: float = 0.0) -> None:
        decisions = tuple(decisions)
        if not decisions:
            raise ValueError("Controller: expected at least one Decision, got none")
        for d in decisions:
            if not isinstance(d, Decision):
                raise ValueError(f"Controller: expected Decision objects, got {type(d).__name__} {d!r}")
        names = [d.name for d in decisions]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"Controller: decision names must be unique, got duplicates {dup}")
        self.decisions = decisions
        lr = positive("lr", lr)
        decay = finite("baseline_decay", baseline_decay)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"baseline_decay: expected a momentum in [0, 1), got {decay}")
        self.baseline_decay = decay
        ew = finite("entropy_weight", entropy_weight)
        if ew < 0:
            raise ValueError(f"entropy_weight: expected a value >= 0, got {ew}")
        self.entropy_weight = ew
        self.logits = [torch.nn.Parameter(torch.zeros(len(d.choices))) for d in decisions]
        self.optimizer = torch.optim.Adam(self.logits, lr=lr, betas=(0.0, 0.999), eps=1e-8)
        # the zero-debiased EMA of TuNAS's update_exponential_moving_average: numerator and
        # denominator both decay, so the first steps see an unbiased mean instead of one pulled to 0
        self._ema_num = 0.0
        self._ema_den = 0.0
        self.steps = 0
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))

    # -- the distribution --------------------------------------------------------------------

    def _probs(self) -> list[torch.Tensor]:
        return [torch.softmax(lg.detach().double(), 0) for lg in self.logits]

    def probabilities(self) -> dict[str, list[float]]:
        """Decision name -> the probability of each choice (float64 softmax of the logits)."""
        return {d.name: p.tolist() for d, p in zip(self.decisions, self._probs())}

    def most_likely(self) -> dict[str, int]:
        """Decision name -> the index of its most probable choice (the lowest index on a tie)."""
        out = {}
        for d, lg in zip(self.decisions, self.logits):
            vals = lg.detach().tolist()
            out[d.name] = max(range(len(vals)), key=lambda i: (vals[i], -i))
        return out

    def entropy(self) -> float:
        """The distribution's entropy in nats (the sum over the independent decisions)."""
        return float(self._entropy().detach())

    def _entropy(self) -> torch.Tensor:
        total = torch.zeros(())
        for lg in self.logits:
            logp = torch.log_softmax(lg, 0)
            total = total - (logp.exp() * logp).sum()
        return total

    def values(self, sample: Sample) -> dict[str, Any]:
        """Decision name -> the chosen *value* (not index) of ``sample``."""
        self._check_sample(sample)
        return {d.name: d.choices[sample[d.name]] for d in self.decisions}

    # -- sampling ----------------------------------------------------------------------------

    def uniforms(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` float64 uniforms in [0, 1) for this rank, from the controller's stream (or
        ``generator``). Every rank draws ``world x n`` and keeps its row, so each rank gets its
        own numbers while all streams advance alike (see the class docstring)."""
        rank, world = _world()
        g = self.generator if generator is None else generator
        return torch.rand(world, n, generator=g, dtype=torch.float64)[rank]

    def sample(self, generator: Optional[torch.Generator] = None) -> dict[str, int]:
        """Draw a path: decision name -> choice index, each decision independent.

        Args:
            generator: draw from this generator instead of the controller's own stream (whose
                state :meth:`state_dict` saves).
        """
        u = self.uniforms(len(self.decisions), generator)
        out = {}
        for i, (d, p) in enumerate(zip(self.decisions, self._probs())):
            # inverse CDF: the first choice whose cumulative probability exceeds u; the clamp
            # covers a last cumulative value rounded just below 1
            k = int(torch.searchsorted(torch.cumsum(p, 0), u[i:i + 1], right=True))
            out[d.name] = min(k, len(d.choices) - 1)
        return out

    def _check_sample(self, sample: Sample) -> None:
        if not isinstance(sample, Mapping):
            raise ValueError(f"expected a sample (a mapping decision name -> choice index), got "
                             f"{type(sample).__name__}")
        names = [d.name for d in self.decisions]
        if set(sample) != set(names):
            missing = sorted(set(names) - set(sample))
            extra = sorted(set(sample) - set(names))
            raise ValueError(f"sample does not match the controller's decisions: missing {missing}, "
                             f"unknown {extra}")
        for d in self.decisions:
            k = sample[d.name]
            if k == ALL:
                raise ValueError(f"sample[{d.name!r}] is {ALL!r} (a warm-up path with every choice "
                                 "enabled): it has no log-probability; train the controller on "
                                 "controller.sample() paths, after the warm-up")
            if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(d.choices):
                raise ValueError(f"sample[{d.name!r}]: expected a choice index in [0, {len(d.choices)}), "
                                 f"got {k!r}")

    def log_prob(self, sample: Sample) -> torch.Tensor:
        """log p(sample), differentiable w.r.t. the logits (the sum over decisions)."""
        self._check_sample(sample)
        total = torch.zeros(())
        for d, lg in zip(self.decisions, self.logits):
            total = total + torch.log_softmax(lg, 0)[sample[d.name]]
        return total

    # -- learning ----------------------------------------------------------------------------

    @property
    def baseline(self) -> Optional[float]:
        """The EMA baseline (None before the first update)."""
        return None if self._ema_den == 0.0 else self._ema_num / self._ema_den

    def update_baseline(self, reward_mean: float) -> float:
        """Fold one step's mean reward (over all ranks: :func:`distributed_mean`) into the baseline
        and return the new baseline. :meth:`step` calls it; call it yourself during the RL delay
        to have a baseline ready when learning starts (TuNAS updates it from step 0)."""
        r = finite("reward_mean", reward_mean)
        m = self.baseline_decay
        self._ema_num = m * self._ema_num + (1.0 - m) * r
        self._ema_den = m * self._ema_den + (1.0 - m)
        return self._ema_num / self._ema_den

    def step(self, samples: Union[Sample, Sequence[Sample]], rewards: Union[float, Sequence[float]],
             *, reward_mean: Optional[float] = None,
             lr: Optional[float] = None) -> Union[float, list[float]]:
        """One REINFORCE update from this rank's path(s) and reward(s).

        The baseline is updated first with the mean reward of the step (TuNAS's order), then the
        advantage ``reward - baseline`` of each path weights its log-probability.

        Args:
            samples: one path (a mapping) or a sequence of paths from :meth:`sample`.
            rewards: one reward per path.
            reward_mean: the mean reward to fold into the baseline; default: the mean over every
                rank's rewards (:func:`distributed_mean`, an all-reduce under torchrun).
            lr: the learning rate for this and later steps (e.g. :func:`.schedule.rl_learning_rate`);
                0 leaves the logits unchanged. Default: keep the current one.

        Returns:
            The advantage of the path (a float), or of each path (a list) if a sequence was given.
        """
        single = isinstance(samples, Mapping)
        paths = [samples] if single else list(samples)
        # one path takes one reward (a number); several take a sequence, one each
        rs = [rewards] if single else list(rewards)
        if not paths:
            raise ValueError("Controller.step: expected at least one sample, got none")
        if len(rs) != len(paths):
            raise ValueError(f"Controller.step: expected one reward per sample ({len(paths)}), "
                             f"got {len(rs)}")
        rs = [finite(f"rewards[{i}]", r) for i, r in enumerate(rs)]
        for s in paths:
            self._check_sample(s)
        if lr is not None:
            lr = finite("lr", lr)
            if lr < 0:
                raise ValueError(f"lr: expected a learning rate >= 0, got {lr}")
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        mean = distributed_mean(rs) if reward_mean is None else finite("reward_mean", reward_mean)
        b = self.update_baseline(mean)
        adv = [r - b for r in rs]
        loss = torch.zeros(())
        for a, s in zip(adv, paths):
            loss = loss - a * self.log_prob(s)
        loss = loss / len(paths)
        if self.entropy_weight:
            loss = loss - self.entropy_weight * self._entropy()
        self.optimizer.zero_grad(set_to_none=False)
        loss.backward()
        self._average_grads()
        self.optimizer.step()
        self.steps += 1
        return adv[0] if single else adv

    def _average_grads(self) -> None:
        """Average the gradients over the ranks (TuNAS's cross-shard optimizer): one all-reduce of
        the flattened gradients, so every rank applies the same update and the logits stay equal."""
        world = _world()[1]
        if world == 1:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in self.logits])
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        flat /= world
        offset = 0
        for p in self.logits:
            n = p.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p))
            offset += n

    # -- checkpointing -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed search needs to continue bit for bit: the decisions (checked on
        load), logits, Adam's state, the baseline's EMA, the step count and the random stream."""
        return {
            "decisions": [(d.name, [repr(c) for c in d.choices]) for d in self.decisions],
            "logits": [lg.detach().clone() for lg in self.logits],
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "ema_num": self._ema_num,
            "ema_den": self._ema_den,
            "baseline_decay": self.baseline_decay,
            "entropy_weight": self.entropy_weight,
            "steps": self.steps,
            "rng": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; the decisions must be the same (names and choices)."""
        mine = [(d.name, [repr(c) for c in d.choices]) for d in self.decisions]
        theirs = [(n, list(c)) for n, c in state["decisions"]]
        if theirs != mine:
            raise ValueError(f"controller state is for other decisions: expected {mine}, got {theirs}")
        with torch.no_grad():
            for lg, saved in zip(self.logits, state["logits"]):
                lg.copy_(saved)
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self._ema_num = float(state["ema_num"])
        self._ema_den = float(state["ema_den"])
        self.baseline_decay = float(state["baseline_decay"])
        self.entropy_weight = float(state["entropy_weight"])
        self.steps = int(state["steps"])
        self.generator.set_state(state["rng"])
