"""The search's last step, optional: the controller's final candidates re-ranked by short
stand-alone training (``search run --rerank K``).

Why: TuNAS scores an architecture by the supernet's shared weights. Measured on digit-clutter
(benchmarks/SEARCH.md), that score did not rank stand-alone trained networks at all at a CPU
budget (Spearman -0.13 to +0.04 over 11 networks, with and without BigNAS's sandwich rule): the
supernet's accuracy differences between architectures were smaller than what separates them
after training alone. MnasNet (Tan et al. 2019, https://arxiv.org/abs/1807.11626, Sec. 4) scored
every sampled model by training it for a few epochs on a proxy task; this step does that for the
few architectures the controller ends on: ``K`` distinct candidates drawn from the final
controller within ``window`` of the latency target, each trained from scratch for ``epochs`` of
the data's own recipe on the search's weight split and scored on its held-out split (never on
val), the best one found.

Candidates: the controller's most likely architecture first (if in the window), then draws from it;
a controller that has converged draws the same architecture again and again, so after every
100 draws without a new candidate the distribution is flattened (its temperature doubled, up to
near-uniform): the candidates are the controller's neighbourhood first, the space's next.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from ..archs.spec import NetSpec
from .space import SearchSpace

#: draws without a new candidate before the controller's distribution is flattened
PATIENCE = 100
MAX_TEMPERATURE = 64.0


def tempered(p: Sequence[float], temperature: float) -> list[float]:
    """``p ** (1 / temperature)``, normalised (1: ``p``; large: near-uniform over ``p``'s support)."""
    w = [max(x, 0.0) ** (1.0 / temperature) for x in p]
    total = sum(w)
    return [x / total for x in w] if total > 0 else [1.0 / len(p)] * len(p)


def rerank_candidates(space: SearchSpace, probabilities: Mapping[str, Sequence[float]],
                      latency: Callable[[NetSpec], float], target_ms: float, k: int, window: float,
                      seed: int = 0, max_draws: int = 5000) -> list[NetSpec]:
    """Up to ``k`` distinct architectures of ``space`` whose ``latency`` is within ``window`` (a
    fraction) of ``target_ms``: the most likely choice of ``probabilities`` (decision -> the
    probability of each choice, the controller's) first when it qualifies, then draws (see the
    module docstring). Fewer than ``k`` when ``max_draws`` draws find no more."""
    if k < 1:
        raise ValueError(f"k: expected at least 1 candidate, got {k}")
    if not 0 < window < 1:
        raise ValueError(f"window must be a fraction in (0, 1), got {window}")
    names = [d.name for d in space.decisions()]
    missing = [n for n in names if n not in probabilities]
    if missing:
        raise ValueError(f"probabilities lack the space's decisions {missing}; expected one list per decision "
                         f"of {space.name}")
    rng = random.Random(seed)
    out: list[NetSpec] = []
    seen: set[str] = set()

    def offer(choice: dict) -> bool:
        spec = space.to_spec(space.canonical(choice))
        key = str(spec)
        if key in seen:
            return False
        seen.add(key)
        if abs(latency(spec) / target_ms - 1) <= window:
            out.append(spec)
        return True

    offer({n: max(range(len(probabilities[n])), key=lambda i: probabilities[n][i]) for n in names})
    temperature, since_new = 1.0, 0
    for _ in range(max_draws):
        if len(out) >= k:
            break
        choice = {n: rng.choices(range(len(probabilities[n])), tempered(probabilities[n], temperature))[0]
                  for n in names}
        since_new = 0 if offer(choice) else since_new + 1
        if since_new >= PATIENCE and temperature < MAX_TEMPERATURE:
            temperature, since_new = temperature * 2, 0
    return out[:k]


def train_candidate(spec: NetSpec, recipe, data, out_dir: Path) -> dict:
    """Train ``spec`` from scratch with ``recipe`` on ``data`` (a DataBundle whose ``val`` is the
    search's held-out split) into ``out_dir`` (resumed from its ``last.pt`` after an
    interruption). Returns ``{"spec", "heldout_top1", "epochs", "seconds"}``."""
    from ..train.loop import train

    out_dir = Path(out_dir)
    last = out_dir / "last.pt"
    res = train(recipe.replace(model=str(spec)), out_dir, resume=last if last.exists() else None,
                progress=False, log=lambda _msg: None, data=data)
    if res.exit_code != 0:
        raise RuntimeError(f"re-ranking: training candidate {spec} stopped ({res.exit_code}): {res.message}")
    return {"spec": str(spec), "heldout_top1": float(res.best), "epochs": recipe.epochs,
            "seconds": float(res.elapsed_s)}


def best_candidate(results: Sequence[dict]) -> Optional[dict]:
    """The result with the highest held-out top-1 (the earlier, i.e. more likely, one on a tie)."""
    return max(results, key=lambda r: r["heldout_top1"], default=None)


__all__ = ["best_candidate", "rerank_candidates", "tempered", "train_candidate"]
