"""Roofline latency model (MobileNetV4 paper, Qin et al. 2024, section 4).

Per layer ``i``::

    MACTime_i = MACs_i / PeakMACs
    MemTime_i = (WeightBytes_i + ActivationBytes_i) / PeakMemBW
    ModelTime = sum_i max(MACTime_i, MemTime_i)

The ridge point ``RP = PeakMACs / PeakMemBW`` (MACs per byte) summarises a chip: a layer
whose operational intensity ``MACs / bytes`` is below RP is memory-bound there. RP = 0 is
infinite bandwidth (time ranks models by MACs alone); a large RP (accelerators) ranks them by
bytes moved. Bytes follow the convention of :mod:`mobilenets.analysis.profile`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from .profile import Profile

#: peak MAC rate used by :func:`sweep` when none is given: 1 TMAC/s. At a fixed RP the model
#: times scale with 1 / peak, so rankings and Pareto fronts do not depend on it.
DEFAULT_PEAK_MACS = 1e12
DEFAULT_RPS = (0, 10, 50, 100, 500)


@dataclass(frozen=True)
class LayerTime:
    """Roofline time of one layer (seconds). ``bound``: ``"compute"`` or ``"memory"``."""

    name: str
    kind: str
    macs: int
    bytes: int
    mac_time: float
    mem_time: float

    @property
    def time(self) -> float:
        return max(self.mac_time, self.mem_time)

    @property
    def bound(self) -> str:
        return "memory" if self.mem_time > self.mac_time else "compute"


@dataclass
class RooflineResult:
    """Roofline of one profiled model on one machine.

    Attributes:
        model: model name. peak_macs: MAC/s. mem_bw: bytes/s (``inf``: unlimited).
        layers: one :class:`LayerTime` per profiled layer.
    """

    model: str
    peak_macs: float
    mem_bw: float
    layers: list = field(default_factory=list)

    @property
    def ridge_point(self) -> float:
        return 0.0 if math.isinf(self.mem_bw) else self.peak_macs / self.mem_bw

    @property
    def time(self) -> float:
        """Predicted model time in seconds."""
        return sum(lt.time for lt in self.layers)

    @property
    def compute_bound(self) -> list:
        return [lt.name for lt in self.layers if lt.bound == "compute"]

    @property
    def memory_bound(self) -> list:
        return [lt.name for lt in self.layers if lt.bound == "memory"]

    def to_dict(self) -> dict:
        return dict(model=self.model, peak_macs=self.peak_macs,
                    mem_bw=None if math.isinf(self.mem_bw) else self.mem_bw,
                    ridge_point=self.ridge_point, time_s=self.time,
                    compute_bound=len(self.compute_bound), memory_bound=len(self.memory_bound),
                    layers=[dict(name=lt.name, kind=lt.kind, macs=lt.macs, bytes=lt.bytes,
                                 time_s=lt.time, bound=lt.bound) for lt in self.layers])


def _check_positive(name: str, v: float, allow_inf: bool = False) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {v!r}") from None
    if math.isnan(v) or v <= 0 or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name} must be a positive{'' if allow_inf else ', finite'} number, got {v!r}")
    return v


def roofline(profile: Profile, peak_macs: float, mem_bw: float) -> RooflineResult:
    """Per-layer roofline time of ``profile`` on a machine with ``peak_macs`` MAC/s and
    ``mem_bw`` bytes/s (``math.inf``: no memory limit).

    Raises:
        ValueError: non-positive (or NaN) peak or bandwidth.
    """
    peak = _check_positive("peak_macs", peak_macs)
    bw = _check_positive("mem_bw", mem_bw, allow_inf=True)
    layers = [LayerTime(r.name, r.kind, r.macs, r.bytes, r.macs / peak,
                        0.0 if math.isinf(bw) else r.bytes / bw) for r in profile.layers]
    return RooflineResult(profile.model, peak, bw, layers)


def bandwidth_for(rp: float, peak_macs: float) -> float:
    """Memory bandwidth (bytes/s) giving ridge point ``rp`` at ``peak_macs``; RP 0 -> inf."""
    rp = float(rp)
    if math.isnan(rp) or rp < 0:
        raise ValueError(f"ridge point must be >= 0 (0: infinite bandwidth), got {rp!r}")
    return math.inf if rp == 0 else peak_macs / rp


@dataclass
class Sweep:
    """Roofline times of several models over ridge points.

    Attributes:
        rps: the ridge points. peak_macs: MAC/s.
        results: ``{rp: {model: RooflineResult}}``.
    """

    rps: tuple
    peak_macs: float
    results: dict

    @property
    def models(self) -> list:
        return list(next(iter(self.results.values())).keys()) if self.results else []

    def times(self, rp: float) -> dict:
        """``{model: seconds}`` at ridge point ``rp``."""
        return {m: r.time for m, r in self.results[rp].items()}

    def ranking(self, rp: float) -> list:
        """Model names, fastest first, at ridge point ``rp``."""
        t = self.times(rp)
        return sorted(t, key=lambda m: (t[m], m))

    def pareto(self, rp: float, accuracy: Mapping[str, float]) -> list:
        """Pareto front (fastest to most accurate) of the models with an accuracy."""
        t = self.times(rp)
        return pareto_front({m: (t[m], float(accuracy[m])) for m in t if m in accuracy})

    def to_dict(self) -> dict:
        return dict(peak_macs=self.peak_macs, rps=list(self.rps),
                    times_s={str(rp): self.times(rp) for rp in self.rps})


def sweep(profiles: Iterable[Profile], rps: Sequence[float] = DEFAULT_RPS,
          peak_macs: float = DEFAULT_PEAK_MACS) -> Sweep:
    """Roofline every profile at each ridge point ``RP = PeakMACs / PeakMemBW``
    (``RP = 0``: infinite bandwidth), as in the MobileNetV4 paper's Figures 2-3.

    Raises:
        ValueError: non-positive peak, a negative RP, or no ridge points.
    """
    peak = _check_positive("peak_macs", peak_macs)
    rps = tuple(float(r) if not float(r).is_integer() else int(r) for r in rps)
    if not rps:
        raise ValueError("rps must name at least one ridge point")
    profiles = list(profiles)
    keys = [p.model for p in profiles]
    if len(set(keys)) != len(keys):  # same model at several sizes: tell them apart
        keys = [f"{p.model}@{p.input_size[0]}" for p in profiles]
    results = {}
    for rp in rps:
        bw = bandwidth_for(rp, peak)
        results[rp] = {k: roofline(p, peak, bw) for k, p in zip(keys, profiles)}
    return Sweep(rps, peak, results)


def pareto_front(points: Mapping[str, Sequence[float]]) -> list:
    """Names of the non-dominated points of ``{name: (time, accuracy)}``: no other point is
    at least as fast and at least as accurate while strictly better in one. Sorted by time
    (ascending), so accuracy increases along the returned list."""
    items = sorted(points.items(), key=lambda kv: (kv[1][0], -kv[1][1], kv[0]))
    front, best = [], -math.inf
    for name, (t, acc) in items:
        if acc > best:
            front.append(name)
            best = acc
    return front
