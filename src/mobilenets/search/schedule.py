"""TuNAS's schedule around the controller: the RL delay, the controller's learning rate, and the
op / filter warm-up of the shared weights (Bender et al. 2020, https://arxiv.org/abs/2008.06120;
the fractions and forms are those of its public code, google-research/tunas
``mobile_architecture_search.py``: ``rl_delay_steps_fraction``,
``increase_ops_warmup_steps_fraction`` and ``increase_filters_warmup_steps_fraction``, all 0.25,
and ``use_exponential_rl_learning_rate_schedule``).

A search of ``total`` steps runs, per step: ``warmup_sample`` (a path for the weight step), one
weight step on the train split, then a fresh ``controller.sample()`` scored on the held-out split
and, if ``rl_enabled``, ``controller.step(path, reward, lr=rl_learning_rate(...))``; during the
RL delay, ``controller.update_baseline(distributed_mean(rewards))`` instead, so the baseline is
current when learning starts (TuNAS updates it from step 0, at an RL learning rate of 0).
"""

from __future__ import annotations

from typing import Mapping, Optional, Union

import torch

from .controller import ALL, DEFAULT_LR, Controller
from .rewards import finite, positive

__all__ = ["rl_enabled", "rl_learning_rate", "warmup_probability", "warmup_sample"]


def _check_schedule(step: int, total: int, frac: float, what: str) -> int:
    """Validate a schedule's arguments; return the number of steps the phase lasts."""
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise ValueError(f"total: expected the number of search steps, an int >= 1, got {total!r}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step: expected an int >= 0, got {step!r}")
    f = finite(what, frac)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"{what}: expected a fraction in [0, 1], got {f}")
    # int(): TuNAS computes its delay / warm-up step counts as int(fraction * max_global_step)
    return int(f * total)


def rl_enabled(step: int, total: int, delay_frac: float = 0.25) -> bool:
    """Whether the controller learns at ``step`` (0-based) of a ``total``-step search.

    TuNAS keeps the RL learning rate at 0 for the first 25 % of the steps
    (``rl_delay_steps_fraction``, after FBNet's Appendix A, https://arxiv.org/abs/1812.03443):
    rewards from barely trained shared weights say little about the architectures, and a
    controller that commits early never lets the others train.

    Args:
        step: the current step, >= 0.
        total: the number of steps of the search, >= 1.
        delay_frac: the fraction of ``total`` before the controller learns, in [0, 1].
    """
    return step >= _check_schedule(step, total, delay_frac, "delay_frac")


def rl_learning_rate(step: int, total: int, base_lr: float = DEFAULT_LR,
                     delay_frac: float = 0.25, growth: float = 10.0) -> float:
    """The controller's learning rate at ``step``: 0 during the RL delay, then
    ``base_lr * growth ** progress`` with progress going 0 -> 1 from the end of the delay to the
    end of the search (TuNAS's ``use_exponential_rl_learning_rate_schedule``, on by default, 10x):
    later rewards come from better-trained shared weights and deserve larger steps.
    Pass it as ``Controller.step(..., lr=...)``; ``growth=1`` keeps it constant.

    Args:
        step: the current step, >= 0.
        total: the number of steps of the search, >= 1.
        base_lr: the rate at the end of the delay, > 0.
        delay_frac: as :func:`rl_enabled`.
        growth: the factor reached at the last step, >= 1.
    """
    delay = _check_schedule(step, total, delay_frac, "delay_frac")
    base = positive("base_lr", base_lr)
    g = finite("growth", growth)
    if g < 1.0:
        raise ValueError(f"growth: expected a factor >= 1, got {g}")
    if step < delay:
        return 0.0
    progress = min(1.0, (step - delay) / max(1, total - delay))
    return base * g ** progress


def warmup_probability(step: int, total: int, warmup_frac: float = 0.25) -> float:
    """The probability that a warmed-up decision is overridden at ``step``: 1 at step 0, falling
    linearly to 0 at ``int(warmup_frac * total)`` and 0 after (TuNAS's ``linear_decay`` of
    ``increase_ops_probability`` / ``increase_filters_probability``, both over 25 % of the steps).

    Args:
        step: the current step, >= 0.
        total: the number of steps of the search, >= 1.
        warmup_frac: the fraction of ``total`` the warm-up lasts, in [0, 1].
    """
    n = _check_schedule(step, total, warmup_frac, "warmup_frac")
    return 0.0 if n == 0 else max(0.0, 1.0 - step / n)


def warmup_sample(controller: Controller, step: int, total: int,
                  fallback: Mapping[str, Union[int, str]], warmup_frac: float = 0.25,
                  generator: Optional[torch.Generator] = None) -> dict[str, Union[int, str]]:
    """A path for the shared-weight step during TuNAS's op / filter warm-up.

    The controller samples a path as usual; then each decision named in ``fallback`` is replaced,
    independently with probability :func:`warmup_probability`, by its fallback: an index (filter
    warm-up: the *largest* filter count, so every filter gets trained while the controller
    would rarely pick the wide ones) or :data:`ALL` (op warm-up: every candidate op of the
    decision enabled at once, TuNAS's "all ops" mask, the supernet's job to run). Decisions not
    in ``fallback`` keep the controller's choice. This is TuNAS's
    ``_replace_sample_with_probability`` per decision (google-research/tunas ``controller.py``).

    A path holding :data:`ALL` has no log-probability, so it cannot feed :meth:`Controller.step`;
    TuNAS requires the warm-up to end before the RL delay does for the same reason.

    Args:
        controller: whose distribution (and random stream) the path comes from.
        step: the current step, >= 0; total: the search's number of steps, >= 1.
        fallback: decision name -> a choice index or :data:`ALL`.
        warmup_frac: the warm-up's fraction of ``total``, in [0, 1].
        generator: as :meth:`Controller.sample`.
    """
    p = warmup_probability(step, total, warmup_frac)
    by_name = {d.name: d for d in controller.decisions}
    for name, value in fallback.items():
        if name not in by_name:
            raise ValueError(f"warmup_sample: unknown decision {name!r} in fallback; expected one of "
                             f"{sorted(by_name)}")
        n = len(by_name[name].choices)
        if value != ALL and not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < n):
            raise ValueError(f"warmup_sample: fallback of {name!r} must be {ALL!r} or a choice index in "
                             f"[0, {n}), got {value!r}")
    path: dict[str, Union[int, str]] = dict(controller.sample(generator))
    # one uniform per decision, drawn whether or not it has a fallback, so the random stream
    # advances the same way whatever ``fallback`` holds
    u = controller.uniforms(len(controller.decisions), generator)
    for i, d in enumerate(controller.decisions):
        if d.name in fallback and float(u[i]) < p:
            path[d.name] = fallback[d.name]
    return path
