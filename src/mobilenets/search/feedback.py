"""Measured-latency feedback: the table predicts, the runtime decides.

A latency table (:mod:`.latency`) predicts a network as the sum of its parts plus one fitted
overhead. That is good for ranking (issue 25's validation: Spearman >= 0.9) but its error is not
the same everywhere in the space: measured in LiteRT INT8 on a 2-core CPU, a network with many
expansion-6 blocks ran 7 % slower than MobileNetV4-Conv-S 0.5 although the table predicted them
equal (large expanded activations that a part timed alone keeps in cache). A search steered by
the table alone then lands where the table is wrong. MnasNet (Tan et al. 2019,
https://arxiv.org/abs/1807.11626, Sec. 3) measures every sampled model on the phone; that is too
slow here (an INT8 export is ~15 s), so the search measures only the controller's current most
likely architecture a few times per stage and corrects the table near where the controller is
heading:

    factor = measured(a) / predicted(a)                  (target given in ms)
    factor = [measured(a) / measured(ref)] * [predicted(ref) / predicted(a)]
                                                         (target = a reference model's latency)

and the reward reads ``predicted(path) * factor``. With a reference model, ``a`` and the reference
are timed in one interleaved run, so the correction is a ratio that machine-wide drifts (which
moved the same network's median by 8 % between runs here) cancel out of. The latest measurement
sets the factor: it describes the architectures the controller now samples. The measurements
happen at fixed steps (so a resumed search measures at the same ones) and are kept in the
checkpoint; under torchrun the main rank measures and broadcasts the factor.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from ..archs.spec import NetSpec
from .latency import LatencyTable
from .measure import measure_networks
from .schedule import rl_enabled

Measure = Callable[[Sequence[NetSpec]], list]


def feedback_steps(n_steps: int, per_stage: int) -> list[int]:
    """The steps of an ``n_steps``-step stage at which the controller's most likely architecture
    is measured: ``per_stage`` of them spread evenly over the RL phase (after TuNAS's 25 % delay),
    none at its first step (the controller has not learned yet) nor after its last."""
    if per_stage <= 0:
        return []
    start = next((i for i in range(n_steps) if rl_enabled(i, n_steps)), n_steps)
    span = n_steps - start
    return sorted({start + (j + 1) * span // (per_stage + 1) for j in range(per_stage)} - {start, n_steps})


class LatencyFeedback:
    """The table's predictions corrected by measurements in the table's runtime.

    Args:
        table: the search's latency table (its runtime, precision and threads are measured in).
        target_ms: the latency target in ms; None when ``reference`` gives it.
        reference: a model whose latency is the target: the table's prediction of it, and with
            measurements, it is timed beside each measured architecture.
        per_stage: measurements per search stage (0: the table alone, factor 1).
        seconds: timing per network and measurement.
        measure: ``specs -> [ms, ...]`` (default: export and time them in one interleaved run,
            :func:`.measure.measure_networks`); tests pass a stand-in.
    """

    def __init__(self, table: LatencyTable, target_ms: Optional[float] = None, reference: Optional[NetSpec] = None,
                 per_stage: int = 0, seconds: float = 1.0, measure: Optional[Measure] = None):
        if (target_ms is None) == (reference is None):
            raise ValueError("give a latency target in ms or a reference model, exactly one "
                             f"(got target_ms={target_ms!r}, reference={reference!r})")
        if per_stage < 0:
            raise ValueError(f"per_stage: expected measurements per stage >= 0, got {per_stage}")
        self.table, self.reference, self.per_stage = table, reference, per_stage
        self.target_ms = float(target_ms) if reference is None else table.predict(reference)
        self.measure = measure or (lambda specs: [m["ms"] for m in measure_networks(specs, table, seconds)])
        self.factor = 1.0
        self.log: list[dict] = []

    def latency(self, predicted_ms: float) -> float:
        """The corrected latency of a network the table predicts at ``predicted_ms``."""
        return predicted_ms * self.factor

    def measure_spec(self, spec: NetSpec) -> dict:
        """Measure ``spec`` (beside the reference, if any): its measured ms, the reference's, and
        the correction factor they imply."""
        pred = self.table.predict(spec)
        if self.reference is None:
            (ms,) = self.measure([spec])
            return {"spec": str(spec), "predicted_ms": pred, "measured_ms": ms, "factor": ms / pred,
                    "measured_vs_target": ms / self.target_ms}
        ms, ref_ms = self.measure([spec, self.reference])
        return {"spec": str(spec), "predicted_ms": pred, "measured_ms": ms, "reference_measured_ms": ref_ms,
                "factor": (ms / ref_ms) * (self.target_ms / pred), "measured_vs_target": ms / ref_ms}

    def calibrate(self, spec: NetSpec, main: bool = True, **where) -> float:
        """Measure ``spec`` (on the main rank), set the factor from it, log it with ``where``
        (stage, step); every rank gets the main rank's factor. Returns the factor."""
        entry = self.measure_spec(spec) if main else {}
        factor = torch.tensor([entry.get("factor", 0.0)], dtype=torch.float64)
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            torch.distributed.broadcast(factor, src=0)
        self.factor = float(factor)
        if main:
            self.log.append({**where, **entry})
        return self.factor

    def state_dict(self) -> dict:
        return {"factor": self.factor, "log": list(self.log)}

    def load_state_dict(self, state: dict) -> None:
        self.factor, self.log = float(state["factor"]), list(state["log"])


__all__ = ["LatencyFeedback", "feedback_steps"]
