"""Latency tables for a search space, measured in the runtime the model will ship on.

A network's latency is predicted as the sum of its parts' latencies (the stem, every block, the
head; each part at its input shape) plus a per-network overhead fitted on a few whole networks,
the lookup-table model of ProxylessNAS / Once-for-All and TuNAS's cost model, but with every
entry measured on the user's own machine: each distinct part is exported alone through the
runtime's :class:`~mobilenets.deploy.mobile.Runtime` (ONNX Runtime, ExecuTorch-XNNPACK, LiteRT;
fp32 or INT8), run, and timed. ``roofline`` fills the same table from the roofline model at a
chosen ridge point (MobileNetV4, Qin et al. 2024, https://arxiv.org/abs/2404.10518, Sec. 2's
RP sweep): no device needed, and no overhead.

A part is keyed by what it computes: a readable label (``uir_k3_s2_e4_c96_a3``), its input shape
and a digest of the module's configuration (its ``repr``: channels, kernels, strides,
activations), so two networks sharing a block at the same shape share its entry.
:func:`space_parts` finds every distinct part of a space without enumerating architectures: a
few "probe" networks, each holding many block variants of one stage in sequence, yield them all.

A table is a JSON file rewritten atomically after every entry, so a killed build (even ``kill
-9``) loses at most the entry being measured; building again resumes. An architecture outside
the space (NetAdapt's pruned widths) gets its missing parts the same way
(:meth:`LatencyTable.ensure`).

Why one module: a part's key, the table that stores and sums its entries and the build that fills
them are one format; split, the key and the table would drift apart. How a part or a network is
timed in a runtime is :mod:`.measure`'s.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import platform
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..archs.spec import NetSpec
from ..models.info import ModelInfo, set_model_info
from ..models.mobilenet import MobileNet
from ..deploy.timing import cpu_model
from ..version import __version__
from .measure import (PRECISIONS, RUNTIMES, check_runtime, measure_network, measure_networks,
                      roofline_network_ms, runtime_timer, time_callable)
from .space import MQA_OP, SearchSpace

TABLE_FORMAT = "mobilenets.latency-table/1"


@dataclass(frozen=True)
class Part:
    """One part of a network: ``key`` (label @ shape # digest), ``label``, ``path`` (the module's
    path in the model: ``stem``, ``stages.i.j``, ``head``), ``module`` (on the ``meta`` device:
    no memory, no initialisation; :meth:`materialize` gives a real one), ``in_shape`` (C, H, W)."""

    key: str
    label: str
    path: str
    module: nn.Module
    in_shape: tuple[int, int, int]

    def materialize(self) -> nn.Module:
        """A CPU copy of the module with initialised weights (values do not matter for timing,
        but must be finite and well scaled for INT8 calibration), in eval mode."""
        module = copy.deepcopy(self.module).to_empty(device="cpu")
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                if t.is_floating_point():
                    t.fill_(0.01)
            for m in module.modules():
                if m is not module and hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        return module.eval()


def _label(spec: NetSpec, path: str, model: MobileNet) -> str:
    if path == "stem":
        return f"stem_k{spec.stem_k}_c{model.stem.conv.out_channels}"
    if path == "head":
        h = spec.head
        return f"head_h{h.hidden}{'_bn' if h.norm else ''}_o{model.num_classes}"
    si, bi = (int(v) for v in path.split(".")[1:])
    block = spec.stages[si][bi]
    row = replace(block, out=model.stages[si][bi].out_chs, width="scale").to_string()
    return row.replace("_r1_", "_", 1)


def network_parts(spec: NetSpec, input_size: Sequence[int], num_classes: int = 1000) -> list[Part]:
    """The parts of ``spec``'s network at ``input_size`` ``(H, W)``, in execution order (built and
    run on the ``meta`` device: shapes only, so probing a space costs little). Memoized: a search
    asks for the same architecture's parts again and again (to fill the table, to predict), and
    building a network even on ``meta`` takes a tenth of a second."""
    return list(_network_parts(spec, tuple(input_size), num_classes))


@functools.lru_cache(maxsize=512)
def _network_parts(spec: NetSpec, input_size: tuple, num_classes: int) -> tuple[Part, ...]:
    with torch.device("meta"):
        model = MobileNet(spec, num_classes=num_classes).eval()
    modules = [("stem", model.stem)] + model.blocks() + [("head", model.head)]
    shapes: dict[str, tuple] = {}

    def recorder(path: str):
        def hook(module, args) -> None:  # a pre-hook returning something would replace the input
            shapes.setdefault(path, tuple(args[0].shape[1:]))
        return hook

    hooks = [m.register_forward_pre_hook(recorder(p)) for p, m in modules]
    try:
        with torch.no_grad():
            model(torch.zeros(1, model.in_chans, *input_size, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    parts = []
    for path, module in modules:
        shape = shapes[path]
        label = _label(spec, path, model)
        digest = hashlib.sha1(repr(module).encode()).hexdigest()[:10]
        parts.append(Part(f"{label}@{'x'.join(map(str, shape))}#{digest}", label, path, module, shape))
    return tuple(parts)


def _variants(st, first: bool) -> list[tuple]:
    """(op, expansion) variants of a block slot (an MQA block has no expansion: one variant)."""
    ops = st.first_ops() if first else st.block_ops(1)
    return [(op, e) for op in ops for e in (st.expansions if op != MQA_OP else st.expansions[:1])]


def _probe_specs(space: SearchSpace) -> Iterable[NetSpec]:
    """Specs that together hold every distinct part of ``space`` (not members of it).

    Stage ``i``'s first block is one ``(input width, filters, op, expansion)`` tuple (its input is
    stage ``i - 1``'s filters), its later blocks one ``(filters, op, expansion)`` each. Each probe
    takes one uncovered first-block tuple of the earliest stage that has one, chains the stages
    around it so the widths agree (preferring uncovered tuples), and gives every stage, after its
    first block, every later-block variant at its filters not yet covered."""
    n = len(space.stages)
    ins = [space.stages[i - 1].filters if i else (None,) for i in range(n)]
    todo = [{(p, f, op, e) for p in ins[i] for f in st.filters for op, e in _variants(st, True)}
            for i, st in enumerate(space.stages)]
    later_todo = [set(st.filters) if max(st.depths) > 1 else set() for st in space.stages]

    def pick(i: int, p=None, f=None) -> tuple:
        ok = lambda t: (p is None or t[0] == p) and (f is None or t[1] == f)  # noqa: E731
        st = space.stages[i]
        pool = sorted((t for t in todo[i] if ok(t)), key=str)
        if pool:
            return pool[0]
        return next(t for t in sorted(((pp, ff, op, e) for pp in ins[i] for ff in st.filters
                                       for op, e in _variants(st, True)), key=str) if ok(t))

    while any(todo):
        i0 = next(i for i in range(n) if todo[i])
        chosen: list = [None] * n
        chosen[i0] = pick(i0)
        for i in range(i0 - 1, -1, -1):   # backwards: stage i's filters feed stage i + 1
            chosen[i] = pick(i, f=chosen[i + 1][0])
        for i in range(i0 + 1, n):        # forwards
            chosen[i] = pick(i, p=chosen[i - 1][1])
        stages = []
        for i, st in enumerate(space.stages):
            p, f, op, e = chosen[i]
            todo[i].discard(chosen[i])
            blocks = [(op, e)]
            if f in later_todo[i]:
                blocks += _variants(st, False)
                later_todo[i].discard(f)
            stages.append(tuple(st.block(j, f, op, e) for j, (op, e) in enumerate(blocks)))
        yield space.frame.replace(stages=space.frame.stages[:space.insert_at] + tuple(stages)
                                  + space.frame.stages[space.insert_at:])


def space_parts(space: SearchSpace, input_size: Sequence[int], num_classes: int = 1000) -> dict[str, Part]:
    """Every distinct part of every architecture of ``space`` at ``input_size``, by key."""
    out: dict[str, Part] = {}
    for spec in _probe_specs(space):
        for part in network_parts(spec, input_size, num_classes):
            out.setdefault(part.key, part)
    return out


# -- the roofline "runtime" ---------------------------------------------------------------------

def _roofline_by_path(spec: NetSpec, input_size: Sequence[int], ridge_point: float, peak_macs: float,
                      num_classes: int, precision: str) -> tuple[list[Part], dict[str, float]]:
    """The parts of ``spec`` and the roofline ms of each (by its path in the model): the network
    profiled once (:func:`mobilenets.analysis.profile`), each layer's time summed into its part."""
    from ..analysis.profile import profile
    from ..analysis.roofline import bandwidth_for, roofline

    parts = network_parts(spec, input_size, num_classes)
    with torch.device("meta"):  # MACs and bytes need shapes only: no memory, no initialisation
        model = MobileNet(spec, num_classes=num_classes).eval()
    set_model_info(model, ModelInfo(name="probe", num_classes=num_classes))
    res = roofline(profile(model, tuple(input_size), dtype=precision), peak_macs, bandwidth_for(ridge_point, peak_macs))
    by_path = {p.path: 0.0 for p in parts}
    for lt in res.layers:
        owner = next((p for p in parts if lt.name == p.path or lt.name.startswith(p.path + ".")
                      or lt.name.startswith(p.path + "#")), None)
        if owner is None:
            raise RuntimeError(f"roofline layer {lt.name!r} belongs to no part ({[p.path for p in parts][:4]}...)")
        by_path[owner.path] += lt.time * 1e3
    return parts, by_path


def roofline_parts(spec: NetSpec, input_size: Sequence[int], ridge_point: float, peak_macs: float,
                   num_classes: int = 1000, precision: str = "fp32") -> dict[str, float]:
    """Roofline ms of one instance of every distinct part of ``spec`` (part key -> ms; a block
    repeated with the same shape is one key, its one block's time)."""
    parts, by_path = _roofline_by_path(spec, input_size, ridge_point, peak_macs, num_classes, precision)
    return {p.key: by_path[p.path] for p in parts}


# -- the table ------------------------------------------------------------------------------------

class TableMismatch(ValueError):
    """A table used for a space, input size, runtime or precision it was not measured for."""


class LatencyTable:
    """Part latencies (ms) for one space, input size, runtime, precision and thread count, and the
    fitted per-network overhead. :meth:`predict` sums them; :meth:`save` writes atomically.

    Each entry keeps the mean, standard deviation, median and quartiles of its timed runs; the
    prediction sums the medians: on a shared CPU a few preempted runs (a scheduler quantum, 10+
    ms) pull the mean of a 50 us block far off while its median stays put."""

    def __init__(self, meta: dict, entries: Optional[dict] = None, networks: Optional[dict] = None,
                 path: Union[str, Path, None] = None):
        self.meta, self.entries = dict(meta), dict(entries or {})
        self.networks = dict(networks or {})  # spec string -> {"measured": stats, "sum_ms": ...}
        self.path = Path(path) if path else None

    @classmethod
    def new(cls, space: SearchSpace, input_size: Sequence[int], runtime: str, precision: str = "fp32",
            threads: int = 1, num_classes: int = 1000, ridge_point: Optional[float] = None,
            peak_macs: Optional[float] = None, path: Union[str, Path, None] = None) -> "LatencyTable":
        check_runtime(runtime, precision)
        meta = {"format": TABLE_FORMAT, "space": space.name, "space_def": space.to_dict(),
                "input_size": list(input_size), "runtime": runtime, "precision": precision, "threads": threads,
                "num_classes": num_classes, "mobilenets": __version__, "torch": torch.__version__,
                "machine": f"{platform.machine()} {cpu_model()}"}
        if runtime == "roofline":
            meta.update(ridge_point=ridge_point, peak_macs=peak_macs)
        return cls(meta, path=path)

    # -- identity checks -------------------------------------------------------------------------
    def check_for(self, space: Optional[SearchSpace] = None, input_size: Optional[Sequence[int]] = None,
                  runtime: Optional[str] = None, precision: Optional[str] = None) -> None:
        """Raise :class:`TableMismatch` naming what differs from what the table was measured for."""
        where = f"table {self.path}" if self.path else "the table"
        if space is not None and self.meta["space_def"] != space.to_dict():
            what = "another space" if self.meta["space"] != space.name else "a different definition of it"
            raise TableMismatch(f"{where} was measured for space {self.meta['space']!r}, given {space.name!r} "
                                f"({what}); build a table for it with mobilenets search table --space ...")
        for name, given in (("input_size", list(input_size) if input_size is not None else None),
                            ("runtime", runtime), ("precision", precision)):
            if given is not None and self.meta[name] != given:
                raise TableMismatch(f"{where} was measured at {name} {self.meta[name]}, given {given}")

    @property
    def space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.meta["space_def"])

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.meta["input_size"])  # type: ignore[return-value]

    @property
    def overhead_ms(self) -> float:
        """Median of (measured - summed parts) over the measured networks (0 without any)."""
        diffs = [n["measured"]["median"] - n["sum_ms"] for n in self.networks.values()]
        return statistics.median(diffs) if diffs else 0.0

    # -- prediction ------------------------------------------------------------------------------
    def parts_ms(self, spec: NetSpec, num_classes: Optional[int] = None) -> float:
        """The summed part latencies of ``spec`` (every part must be in the table; ``num_classes``:
        the head's outputs, default the table's)."""
        parts = network_parts(spec, self.input_size, self._classes(num_classes))
        missing = [p.key for p in parts if p.key not in self.entries]
        if missing:
            width = self.space.frame.width_mult
            hint = (f"; the table's space is at width_mult {width:g}, this architecture at {spec.width_mult:g} (its "
                    f"spec at the table's width: model_spec(name).replace(width_mult={width:g}))"
                    if spec.width_mult != width else "")
            raise TableMismatch(f"{len(missing)} part(s) of this architecture are not in the table (measured for "
                                f"space {self.meta['space']!r} at {self.input_size}), e.g. {missing[0]}; an "
                                f"architecture outside the space, or an unfinished table (run search table again)"
                                + hint)
        return sum(self.entries[p.key]["median"] for p in parts)

    def predict(self, spec: NetSpec, num_classes: Optional[int] = None) -> float:
        """Predicted ms of ``spec``: its parts' sum plus the fitted overhead."""
        return self.parts_ms(spec, num_classes) + self.overhead_ms

    def _classes(self, num_classes: Optional[int]) -> int:
        return self.meta["num_classes"] if num_classes is None else num_classes

    def missing(self, spec: NetSpec, num_classes: Optional[int] = None) -> list[Part]:
        """The parts of ``spec`` (at the table's input size) that have no entry yet."""
        return [p for p in network_parts(spec, self.input_size, self._classes(num_classes))
                if p.key not in self.entries]

    def ensure(self, spec: NetSpec, num_classes: Optional[int] = None, seconds: float = 0.5,
               progress: bool = False, save: bool = True) -> int:
        """Add the parts of ``spec`` the table lacks, measured (or, for ``roofline``, computed)
        exactly as :func:`build_table` fills a space's parts, and save the table after each (an
        architecture outside the table's space, e.g. a pruned width in NetAdapt, then predicts
        like one inside it). Returns the number of parts added."""
        todo = self.missing(spec, num_classes)
        if todo:
            _fill_parts(self, spec if self.meta["runtime"] == "roofline" else None, todo, self._classes(num_classes),
                        seconds, progress, save)
        return len(todo)

    # -- I/O -------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"meta": self.meta, "overhead_ms": self.overhead_ms, "networks": self.networks,
                "entries": self.entries}

    def save(self, path: Union[str, Path, None] = None) -> Path:
        from ..weights.io import atomic_write

        self.path = Path(path) if path else self.path
        if self.path is None:
            raise ValueError("LatencyTable.save: no path given")
        text = json.dumps(self.to_dict(), indent=1)
        return atomic_write(self.path, lambda tmp: Path(tmp).write_text(text))

    @classmethod
    def load(cls, path: Union[str, Path]) -> "LatencyTable":
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"latency table {str(p)!r} does not exist (mobilenets search table --out ... writes one)")
        try:
            data = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"latency table {str(p)!r} is not JSON: {e}") from None
        if not isinstance(data, dict) or data.get("meta", {}).get("format") != TABLE_FORMAT:
            raise ValueError(f"{str(p)!r} is not a mobilenets latency table (expected meta.format {TABLE_FORMAT!r})")
        return cls(data["meta"], data.get("entries"), data.get("networks"), p)


def build_table(table: LatencyTable, fit_networks: int = 5, seconds: float = 0.5, seed: int = 0,
                progress: bool = True, save: bool = True) -> LatencyTable:
    """Fill ``table``: every distinct part of its space (entries already there are kept: a build
    resumes), then (measured runtimes) ``fit_networks`` whole networks (the space's hand-designed
    models, then random members, fixed by ``seed``) for the overhead. Saved after every entry."""
    import random

    from ..progress import progress_iter

    space, size, meta = table.space, table.input_size, table.meta
    parts = space_parts(space, size, meta["num_classes"])
    todo = [parts[k] for k in parts if k not in table.entries]
    if meta["runtime"] == "roofline":
        for spec in progress_iter(list(_probe_specs(space)), "roofline", enabled=progress):
            _fill_parts(table, spec, [], meta["num_classes"], seconds, False, False)
        if save and table.path:
            table.save()
        return table
    _fill_parts(table, None, todo, meta["num_classes"], seconds, progress, save)
    from ..models.registry import model_spec

    rng = random.Random(seed)
    specs = [model_spec(n) for n in space.contains if space.contains_spec(model_spec(n))]
    specs = [s.replace(width_mult=space.frame.width_mult) for s in specs]
    while len(specs) < fit_networks:
        specs.append(space.to_spec(space.sample(rng)))
    for spec in progress_iter(specs[:fit_networks], "whole networks (overhead)", enabled=progress):
        text = str(spec)
        if text in table.networks:
            continue
        table.networks[text] = {"measured": measure_network(spec, table, seconds), "sum_ms": table.parts_ms(spec)}
        if save and table.path:
            table.save()
    return table


def _fill_parts(table: LatencyTable, spec: Optional[NetSpec], parts: Sequence[Part], num_classes: int,
                seconds: float, progress: bool, save: bool) -> None:
    """The one way entries are made. Measured runtimes: each of ``parts`` exported alone, run
    and timed (:func:`runtime_timer`), the table saved after each (a killed build loses at most
    the entry being measured). ``roofline``: every part of ``spec`` computed in one profile
    (:func:`roofline_parts`; entries already there are kept)."""
    from ..progress import progress_iter

    meta = table.meta
    if meta["runtime"] == "roofline":
        if spec is None:
            raise ValueError("a roofline table computes the parts of a whole network: give its spec")
        for key, ms in roofline_parts(spec, table.input_size, meta["ridge_point"], meta["peak_macs"], num_classes,
                                      meta["precision"]).items():
            table.entries.setdefault(key, {"ms": ms, "median": ms, "std": 0.0, "n": 1})
        if save and table.path:
            table.save()
        return
    measure = runtime_timer(meta["runtime"], meta["precision"], meta["threads"], seconds)
    for part in progress_iter(parts, f"{meta['runtime']} {meta['precision']} parts", enabled=progress):
        table.entries[part.key] = measure(part.materialize(), part.in_shape)
        if save and table.path:
            table.save()


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (:func:`mobilenets.analysis.calibrate.spearman`)."""
    from ..analysis.calibrate import spearman

    return spearman(x, y)


def mean_abs_pct_error(pred: Sequence[float], meas: Sequence[float]) -> float:
    """Mean of |pred - meas| / meas, in percent."""
    if len(pred) != len(meas) or not pred:
        raise ValueError(f"expected two equal, non-empty lists, got {len(pred)} and {len(meas)} values")
    return 100 * statistics.fmean(abs(p - m) / m for p, m in zip(pred, meas)) if all(m > 0 for m in meas) else math.nan


__all__ = ["PRECISIONS", "RUNTIMES", "LatencyTable", "Part", "TableMismatch", "build_table", "check_runtime",
           "mean_abs_pct_error", "measure_network", "measure_networks", "network_parts", "rank_correlation",
           "roofline_network_ms", "roofline_parts", "runtime_timer", "space_parts", "time_callable"]
