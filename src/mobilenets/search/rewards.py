"""The rewards of a latency-aware architecture search, and the check that a latency target is
reachable at all.

- :func:`absolute_reward`: TuNAS's ``Q + beta |T / T0 - 1|`` (Bender et al. 2020,
  https://arxiv.org/abs/2008.06120), the search's default.
- :func:`mnas_reward`: MnasNet's ``Q (T / T0) ** w`` (Tan et al. 2019,
  https://arxiv.org/abs/1807.11626, Eq. 2), the option MobileNetV3 was searched with.
- :func:`finite` / :func:`positive` / :func:`penalty`: the number checks the search package
  shares, each error naming the argument, what was expected and what was given.
"""

from __future__ import annotations

import math

__all__ = ["absolute_reward", "mnas_reward", "check_target"]


def finite(name: str, value: float) -> float:
    """``value`` as a float; a ValueError naming ``name`` unless it is a finite number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a finite number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {v}")
    return v


def positive(name: str, value: float) -> float:
    """``value`` as a float; a ValueError naming ``name`` unless it is finite and > 0."""
    v = finite(name, value)
    if v <= 0:
        raise ValueError(f"{name}: expected a number > 0, got {v}")
    return v


def penalty(name: str, value: float) -> float:
    """``value`` as a float; a ValueError naming ``name`` unless it is finite and <= 0."""
    v = finite(name, value)
    if v > 0:
        # a positive exponent / slope would reward the very cost the search should avoid
        raise ValueError(f"{name}: expected a value <= 0 (a cost penalty), got {v}")
    return v


def absolute_reward(quality: float, latency: float, target: float, beta: float = -0.10) -> float:
    """TuNAS's absolute reward ``Q + beta * |T / T0 - 1|`` (Bender et al. 2020,
    https://arxiv.org/abs/2008.06120; beta = -0.10 is its default, ``rl_cost_model_exponent``).

    Unlike MnasNet's multiplicative reward it penalizes a path for missing the target in *either*
    direction, so the search lands near ``T0`` instead of trading accuracy for ever smaller models,
    and one beta works across targets (the paper's reason for it).

    Args:
        quality: Q, e.g. the path's accuracy on a held-out batch (any finite number).
        latency: T, the path's (predicted or measured) latency, > 0.
        target: T0, the latency target in the same unit, > 0.
        beta: the penalty per unit of relative miss, <= 0.
    """
    q = finite("quality", quality)
    t = positive("latency", latency)
    t0 = positive("target", target)
    return q + penalty("beta", beta) * abs(t / t0 - 1.0)


def mnas_reward(quality: float, latency: float, target: float, w: float = -0.07) -> float:
    """MnasNet's soft-constraint reward ``Q * (T / T0) ** w`` (Tan et al. 2019, "MnasNet:
    Platform-Aware Neural Architecture Search for Mobile", https://arxiv.org/abs/1807.11626,
    Eq. 2 with alpha = beta = w; w = -0.07 there). MobileNetV3 (Howard et al. 2019,
    https://arxiv.org/abs/1905.02244, Sec. 4.1) used w = -0.15 for V3-Small, where accuracy moves
    more steeply with latency. With a constant quality and w < 0 the reward only grows as latency
    falls, so the search drifts to the cheapest architecture: the target sets the scale, not a
    point to hit (that is what :func:`absolute_reward` is for). MnasNet's hard-constraint form
    (w = 0 below the target) is not provided.

    Args:
        quality: Q, e.g. held-out accuracy; finite.
        latency: T, > 0.
        target: T0, > 0, same unit as ``latency``.
        w: the exponent, <= 0.
    """
    q = finite("quality", quality)
    t = positive("latency", latency)
    t0 = positive("target", target)
    return q * (t / t0) ** penalty("w", w)


def check_target(target: float, cheapest_latency: float) -> None:
    """Refuse a latency target no architecture of the space can meet.

    Args:
        target: the requested latency target, > 0.
        cheapest_latency: the latency of the space's cheapest architecture, same unit, > 0.

    Raises:
        ValueError: naming both numbers, when ``target < cheapest_latency``.
    """
    t0 = positive("target", target)
    low = positive("cheapest_latency", cheapest_latency)
    if t0 < low:
        raise ValueError(f"latency target {t0:g} is below the cheapest architecture of the search "
                         f"space ({low:g}): no architecture can meet it; choose a target >= {low:g} "
                         "or a space with smaller choices")
