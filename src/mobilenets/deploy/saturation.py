"""Which activation values make no difference to a quantized graph's outputs: an activation
read only through a clamp (a ReLU6 after a conv, whose output XNNPACK's and litert-torch's
quantizers observe together with it; the SE gate's input, read through ``relu6(x + 3) / 6``) is
told apart by the graph only inside the clamp's interval. :func:`within_saturation` clips each
such observer's input to that interval while calibrating: no output changes, and the 256 steps
cover only values that matter (used by every PT2E calibration method, :mod:`.observers`)."""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Optional

import torch

Bounds = Optional[tuple[float, float]]  # (lo, hi); None: no bound


def aten_ops(*names: str) -> set:
    """The ``torch.ops.aten`` overloads named ``"op.overload"`` (e.g. ``"add.Tensor"``)."""
    return {getattr(getattr(torch.ops.aten, n.split(".")[0]), n.split(".")[1]) for n in names}


_HARDTANH = aten_ops("hardtanh.default", "hardtanh_.default")
_CLAMP = aten_ops("clamp.default", "clamp_.default")
_RELU = aten_ops("relu.default", "relu_.default")
_RELU6 = aten_ops("relu6.default", "relu6_.default")
_ADD, _SUB = aten_ops("add.Tensor", "add_.Tensor"), aten_ops("sub.Tensor", "sub_.Tensor")
_MUL, _DIV = aten_ops("mul.Tensor", "mul_.Tensor"), aten_ops("div.Tensor", "div_.Tensor")


def _hull(bounds) -> Bounds:
    bounds = list(bounds)
    if not bounds or any(b is None for b in bounds):
        return None
    return min(b[0] for b in bounds), max(b[1] for b in bounds)


def _clamp_bounds(node) -> Bounds:
    """The interval a clamping op (hardtanh / ReLU6, clamp, ReLU) keeps; None for another op."""
    args = list(node.args) + [None] * 3
    if node.target in _HARDTANH:
        lo, hi = node.kwargs.get("min_val", args[1]), node.kwargs.get("max_val", args[2])
        lo, hi = (-1.0 if lo is None else lo), (1.0 if hi is None else hi)
    elif node.target in _CLAMP:
        lo, hi = node.kwargs.get("min", args[1]), node.kwargs.get("max", args[2])
        lo, hi = (-math.inf if lo is None else lo), (math.inf if hi is None else hi)
    elif node.target in _RELU:
        lo, hi = 0.0, math.inf
    elif node.target in _RELU6:
        lo, hi = 0.0, 6.0
    else:
        return None
    return (float(lo), float(hi)) if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) else None


def observer_calls(gm: torch.fx.GraphModule) -> dict:
    """``{call node: observer module name}`` for every observer call of a prepared PT2E graph."""
    from torchao.quantization.pt2e.observer import ObserverBase

    return {n: n.target for n in gm.graph.nodes
            if n.op == "call_module" and isinstance(gm.get_submodule(n.target), ObserverBase)}


class _Saturation:
    """Per observer call in a prepared PT2E graph: the interval outside which its values make no
    difference to the graph's outputs (None where every value may matter)."""

    def __init__(self, gm: torch.fx.GraphModule):
        self.gm, self._memo = gm, {}
        self.observers = observer_calls(gm)

    def constant(self, arg) -> Optional[float]:
        """A one-element constant operand (a number, or a tensor attribute behind its observer)."""
        if isinstance(arg, (int, float)) and not isinstance(arg, bool):
            return float(arg)
        if isinstance(arg, torch.fx.Node):
            if arg in self.observers:
                return self.constant(arg.args[0])
            if arg.op == "get_attr":
                t = getattr(self.gm, arg.target, None)
                if isinstance(t, torch.Tensor) and t.numel() == 1:
                    return float(t)
        return None

    def used(self, node) -> Bounds:
        """What the users of ``node``'s value tell apart: a clamp's interval, carried back through
        observers and additions / multiplications by positive constants (the hull over users)."""
        if node not in self._memo:
            self._memo[node] = _hull(self._through(node, user) for user in node.users)
        return self._memo[node]

    def _through(self, node, user) -> Bounds:
        if user in self.observers:
            return self.used(user)
        clamp = _clamp_bounds(user)
        if clamp is not None:
            return clamp if user.args[0] is node else None
        if user.kwargs or len(user.args) != 2 or user.target not in _ADD | _SUB | _MUL | _DIV:
            return None
        a, b = user.args
        other = b if a is node else a if b is node else None
        c = self.constant(other) if other is not node else None
        after = self.used(user) if c is not None else None
        if after is None:
            return None
        lo, hi = after
        if user.target in _ADD:
            return lo - c, hi - c
        if user.target in _SUB:
            return (lo + c, hi + c) if a is node else (c - hi, c - lo)
        if c <= 0 or (user.target in _DIV and a is not node):
            return None
        return (lo / c, hi / c) if user.target in _MUL else (lo * c, hi * c)

    def of_call(self, obs_node) -> Bounds:
        """One observer call: its users' interval, or (when its input is a clamp's output)
        that clamp's, whichever is narrower."""
        produced = _clamp_bounds(obs_node.args[0]) if isinstance(obs_node.args[0], torch.fx.Node) else None
        bounds = [b for b in (self.used(obs_node), produced) if b is not None and b[0] < b[1]]
        if not bounds:
            return None
        lo, hi = max(b[0] for b in bounds), min(b[1] for b in bounds)
        return (lo, hi) if lo < hi and math.isfinite(lo) and math.isfinite(hi) else None


def saturation_ranges(gm: torch.fx.GraphModule) -> dict[str, tuple[float, float]]:
    """``{observer module name: (lo, hi)}`` for the activation observers of a prepared PT2E graph
    whose every call sees values that matter only inside ``[lo, hi]``: the hull of each call's
    interval, where each call is either read only through a saturating op (a hardtanh / ReLU6 /
    clamp, reached through additions and positive multiplications by constants: the hard-sigmoid
    ``relu6(x + 3) / 6`` makes its input's interval [-3, 3]) or is such an op's output (an
    observer shared with the conv before a ReLU6 sees both). An observer with a call of unbounded
    use is left out."""
    sat = _Saturation(gm)
    calls: dict[str, list] = {}
    for node, name in sat.observers.items():
        calls.setdefault(name, []).append(sat.of_call(node))
    return {name: b for name, bs in calls.items() if (b := _hull(bs)) is not None}


@contextlib.contextmanager
def clipped_observers(gm: torch.fx.GraphModule, ranges: dict[str, tuple[float, float]]) -> Iterator[dict]:
    """While inside: each observer named in ``ranges`` sees (and passes on) its input clipped to
    its interval. Yields ``ranges``."""
    handles = []
    for name, (lo, hi) in ranges.items():
        def clip(module, args, lo=lo, hi=hi):
            return (args[0].clamp(lo, hi), *args[1:])

        handles.append(gm.get_submodule(name).register_forward_pre_hook(clip))
    try:
        yield ranges
    finally:
        for h in handles:
            h.remove()


def within_saturation(gm: torch.fx.GraphModule):
    """:func:`clipped_observers` with :func:`saturation_ranges`: calibrating inside gives the same
    outputs (the clipped values are ones no later op distinguishes) and ranges that cover only
    what the saturating ops keep: MobileNetV3's SE gates, and the conv outputs XNNPACK's quantizer
    observes with their ReLU6."""
    return clipped_observers(gm, saturation_ranges(gm))


__all__ = ["Bounds", "aten_ops", "clipped_observers", "observer_calls", "saturation_ranges", "within_saturation"]
