"""Search spaces as data: the decisions of a TuNAS-style search over Universal Inverted
Bottleneck (UIB) stages, and the ordinary :class:`NetSpec` of every architecture in them.

MobileNetV4 (Qin et al. 2024, https://arxiv.org/abs/2404.10518, Sec. 3.2 and 4) searches a UIB
supernet with TuNAS (Bender et al. 2020, https://arxiv.org/abs/2008.06120): the stem (3x3 conv,
stride 2) and the FusedIB stage are fixed; in each later stage the search picks the depth, the
output filters and, per block, the two optional depthwise convs of the UIB (start and middle,
each absent / 3x3 / 5x5) and the expansion. A :class:`SearchSpace` is that as data:

- ``frame``: a :class:`NetSpec` holding everything fixed (header: stem, activation, head, layer
  scale, width; the fixed stages: stem / FusedIB stages before, the 1x1 960 conv after);
- ``stages``: one :class:`StageSpace` per searched stage, inserted at ``insert_at`` in the
  frame's stages.

Decisions (:meth:`SearchSpace.decisions`, each a categorical choice for the controller):
``s{i}.depth``, ``s{i}.filters`` and, for every block slot ``j`` up to the deepest choice,
``s{i}.b{j}.op`` (``a{start}k{middle}``, or ``mqa`` where the stage offers Mobile MQA) and
``s{i}.b{j}.e`` (expansion). A choice is a dict of indices; :meth:`SearchSpace.to_spec` turns it
into a NetSpec, :meth:`SearchSpace.encode` a NetSpec back into its choice (or says which block is
outside the space). Slots beyond the chosen depth, and the expansion of an MQA block, do not
matter; :meth:`SearchSpace.canonical` sets them to 0 so equal architectures have equal choices.

Shipped spaces (:mod:`.spaces`) are built around the hand-designed MobileNetV4 models they
contain (``mobilenets search spaces`` lists them); a user's own is a few lines of Python or a
JSON file (:meth:`SearchSpace.to_dict` / :func:`mobilenets.search.spaces.load_space`).
"""

from __future__ import annotations

import difflib
import math
import random
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional, Sequence, Union

from ..archs.spec import BlockSpec, NetSpec, load_spec
from .controller import Decision

#: the UIB forms (start dw, middle dw), 0 = absent: IB (0, k), ConvNeXt-like (k, 0), ExtraDW
#: (k, k'), FFN (0, 0); MNv4 Sec. 3.2
UIB_OPS: tuple[tuple[int, int], ...] = tuple((a, k) for a in (0, 3, 5) for k in (0, 3, 5))
MQA_OP = "mqa"


def op_name(op: Union[tuple[int, int], str]) -> str:
    """``(3, 5)`` -> ``"a3k5"``; ``"mqa"`` stays."""
    return op if isinstance(op, str) else f"a{op[0]}k{op[1]}"


def round_filters(base: int, multiplier: float, divisor: int = 8) -> int:
    """``base * multiplier`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``)."""
    return max(divisor, int(round(base * multiplier / divisor)) * divisor)


@dataclass(frozen=True)
class MQAOption:
    """Mobile MQA offered as a block op in a stage (MNv4 Sec. 3.3): ``heads``, ``key_dim`` and
    the key/value downsampling stride (2 in the stride-16 stage of the hybrids, 1 at stride 32)."""

    heads: int = 4
    key_dim: int = 64
    kv_stride: int = 1

    def __post_init__(self):
        if self.heads < 1 or self.key_dim < 1 or self.kv_stride not in (1, 2):
            raise ValueError(f"MQA option needs heads >= 1, key_dim >= 1, kv_stride 1 or 2, got {self}")


@dataclass(frozen=True)
class StageSpace:
    """The choices of one searched stage.

    Attributes:
        depths: block counts to choose from.
        filters: output channels to choose from (the stage's blocks share them), before the
            space's width multiplier; :func:`round_filters` makes them from a base.
        ops: the UIB forms ``(start dw, middle dw)`` each block chooses from.
        expansions: the expansion ratios each block chooses from.
        stride: the first block's stride (2: the stage downsamples). A strided block needs a
            depthwise conv, so its ops exclude the FFN form ``(0, 0)``.
        mqa: offer Mobile MQA as an op of the blocks after the first (``None``: not offered).
    """

    depths: tuple[int, ...]
    filters: tuple[int, ...]
    ops: tuple[tuple[int, int], ...] = UIB_OPS
    expansions: tuple[float, ...] = (2.0, 3.0, 4.0, 6.0)
    stride: int = 2
    mqa: Optional[MQAOption] = None

    def __post_init__(self):
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "filters", tuple(int(f) for f in self.filters))
        object.__setattr__(self, "ops", tuple(tuple(int(v) for v in op) for op in self.ops))
        object.__setattr__(self, "expansions", tuple(float(e) for e in self.expansions))
        for name in ("depths", "filters", "ops", "expansions"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"stage space: {name} needs at least one choice, got none")
            if len(set(values)) != len(values):
                raise ValueError(f"stage space: {name} has repeated choices: {values}")
        if min(self.depths) < 1:
            raise ValueError(f"stage space: depths must be >= 1, got {self.depths}")
        if min(self.filters) < 1:
            raise ValueError(f"stage space: filters must be >= 1, got {self.filters}")
        bad = [op for op in self.ops if len(op) != 2 or any(k not in (0, 3, 5, 7) for k in op)]
        if bad:
            raise ValueError(f"stage space: an op is (start dw, middle dw), each 0 (absent), 3, 5 or 7, got {bad[0]}")
        if min(self.expansions) <= 0:
            raise ValueError(f"stage space: expansions must be > 0, got {self.expansions}")
        if self.stride not in (1, 2):
            raise ValueError(f"stage space: stride must be 1 or 2, got {self.stride}")
        if self.stride == 2 and not self.first_ops():
            raise ValueError("stage space: a strided first block needs a depthwise conv, but the only op is "
                             "the FFN form (0, 0)")

    def first_ops(self) -> tuple[tuple[int, int], ...]:
        """The ops of the first block (a strided block cannot be the FFN form)."""
        return tuple(op for op in self.ops if self.stride == 1 or any(op))

    def block_ops(self, j: int) -> tuple[Union[tuple[int, int], str], ...]:
        """The op choices of block slot ``j``."""
        if j == 0:
            return self.first_ops()
        return self.ops + ((MQA_OP,) if self.mqa is not None else ())

    def block(self, j: int, filters: int, op: Union[tuple[int, int], str], e: float) -> BlockSpec:
        """Block slot ``j`` of this stage as a row: a UIB with depthwise kernels ``op`` and
        expansion ``e`` (the first slot takes the stage's stride), or the stage's Mobile MQA."""
        if op == MQA_OP:
            m = self.mqa
            return BlockSpec("mqa", filters, 1, k=3, heads=m.heads, key_dim=m.key_dim, kv_stride=m.kv_stride)
        return BlockSpec("uir", filters, self.stride if j == 0 else 1, k=op[1], a=op[0], e=e)

    def restrict(self, **kw: Any) -> "StageSpace":
        """This stage with some choice lists replaced (``depths``, ``filters``, ``ops``,
        ``expansions``)."""
        return replace(self, **kw)

    def size(self) -> int:
        """Distinct architectures of this stage (blocks past the depth do not count)."""
        per_block = [len(self.block_ops(j)) * len(self.expansions) - (len(self.expansions) - 1) *
                     (self.mqa is not None and j > 0) for j in range(max(self.depths))]
        return len(self.filters) * sum(math.prod(per_block[:d]) for d in self.depths)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"depths": list(self.depths), "filters": list(self.filters),
                               "ops": [list(op) for op in self.ops], "expansions": list(self.expansions),
                               "stride": self.stride}
        if self.mqa is not None:
            out["mqa"] = {"heads": self.mqa.heads, "key_dim": self.mqa.key_dim, "kv_stride": self.mqa.kv_stride}
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> "StageSpace":
        _check_keys(data, ("depths", "filters", "ops", "expansions", "stride", "mqa"), "stage space")
        data = dict(data)
        if data.get("mqa") is not None:
            _check_keys(data["mqa"], ("heads", "key_dim", "kv_stride"), "mqa option")
            data["mqa"] = MQAOption(**data["mqa"])
        return cls(**data)


@dataclass(frozen=True)
class SearchSpace:
    """A search space: a frame of fixed stages and searched :class:`StageSpace` s.

    Attributes:
        name: the space's name.
        frame: the fixed part: header fields (stem, activation, head, layer scale,
            ``width_mult``) and the fixed stages; the searched stages go in at ``insert_at``.
        insert_at: index in ``frame.stages`` where the searched stages are inserted.
        stages: the searched stages, in order.
        contains: registry names of hand-designed models in the space (checked by the tests and
            shown by ``mobilenets search spaces``).
        note: one line on what the space is.
    """

    name: str
    frame: NetSpec
    insert_at: int
    stages: tuple[StageSpace, ...]
    contains: tuple[str, ...] = ()
    note: str = field(default="", compare=False)

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(self.stages))
        object.__setattr__(self, "contains", tuple(self.contains))
        if not self.stages:
            raise ValueError(f"search space {self.name!r}: needs at least one searched stage")
        if not 0 <= self.insert_at <= len(self.frame.stages):
            raise ValueError(f"search space {self.name!r}: insert_at must be in [0, {len(self.frame.stages)}] "
                             f"(the frame's stage count), got {self.insert_at}")

    # -- decisions ---------------------------------------------------------------------------
    def decisions(self) -> list[Decision]:
        """Every categorical decision, in a fixed order (the controller's)."""
        out = []
        for i, st in enumerate(self.stages):
            out.append(Decision(f"s{i}.depth", st.depths))
            out.append(Decision(f"s{i}.filters", st.filters))
            for j in range(max(st.depths)):
                out.append(Decision(f"s{i}.b{j}.op", tuple(op_name(op) for op in st.block_ops(j))))
                out.append(Decision(f"s{i}.b{j}.e", st.expansions))
        return out

    def size(self) -> int:
        """The number of distinct architectures."""
        return math.prod(st.size() for st in self.stages)

    def sample(self, rng: Optional[random.Random] = None) -> dict[str, int]:
        """A uniformly random choice per decision (canonical)."""
        rng = rng or random.Random()
        return self.canonical({d.name: rng.randrange(len(d.choices)) for d in self.decisions()})

    def check_choice(self, choice: Mapping[str, int]) -> None:
        """Raise ``ValueError`` naming the first missing, unknown or out-of-range decision."""
        decisions = {d.name: d for d in self.decisions()}
        unknown = [k for k in choice if k not in decisions]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(decisions), n=1)
            raise ValueError(f"{self.name}: unknown decision {unknown[0]!r}"
                             + (f"; did you mean {close[0]}?" if close else ""))
        for name, d in decisions.items():
            if name not in choice:
                raise ValueError(f"{self.name}: the choice has no {name!r} (every decision needs an index)")
            v = choice[name]
            if not isinstance(v, int) or not 0 <= v < len(d.choices):
                raise ValueError(f"{self.name}: decision {name} takes an index in [0, {len(d.choices)}) "
                                 f"({', '.join(map(str, d.choices))}), got {v!r}")

    def canonical(self, choice: Mapping[str, int]) -> dict[str, int]:
        """``choice`` with the decisions that do not matter (slots past the depth, an MQA block's
        expansion) set to 0."""
        self.check_choice(choice)
        out = dict(choice)
        for i, st in enumerate(self.stages):
            depth = st.depths[out[f"s{i}.depth"]]
            for j in range(max(st.depths)):
                if j >= depth:
                    out[f"s{i}.b{j}.op"] = out[f"s{i}.b{j}.e"] = 0
                elif st.block_ops(j)[out[f"s{i}.b{j}.op"]] == MQA_OP:
                    out[f"s{i}.b{j}.e"] = 0
        return out

    # -- choice <-> spec -----------------------------------------------------------------------
    def stage_blocks(self, i: int, choice: Mapping[str, int]) -> tuple[BlockSpec, ...]:
        """The blocks of searched stage ``i`` under ``choice``."""
        st = self.stages[i]
        depth, out = st.depths[choice[f"s{i}.depth"]], st.filters[choice[f"s{i}.filters"]]
        return tuple(st.block(j, out, st.block_ops(j)[choice[f"s{i}.b{j}.op"]], st.expansions[choice[f"s{i}.b{j}.e"]])
                     for j in range(depth))

    def to_spec(self, choice: Mapping[str, int]) -> NetSpec:
        """The architecture of ``choice``: an ordinary :class:`NetSpec`."""
        self.check_choice(choice)
        searched = tuple(self.stage_blocks(i, choice) for i in range(len(self.stages)))
        stages = self.frame.stages[:self.insert_at] + searched + self.frame.stages[self.insert_at:]
        return self.frame.replace(stages=stages)

    def encode(self, spec: Union[NetSpec, str]) -> dict[str, int]:
        """The canonical choice of ``spec`` (a NetSpec, spec string or registry name of a
        NetSpec model is resolved by the caller: here a NetSpec or spec string).

        Raises:
            ValueError: naming the first part of ``spec`` outside the space.
        """
        spec = load_spec(spec) if not isinstance(spec, NetSpec) else spec
        n_fixed, n_search = len(self.frame.stages), len(self.stages)
        if len(spec.stages) != n_fixed + n_search:
            raise ValueError(f"not in space {self.name}: expected {n_fixed + n_search} stages "
                             f"({n_fixed} fixed + {n_search} searched), got {len(spec.stages)}")
        fixed = spec.stages[:self.insert_at] + spec.stages[self.insert_at + n_search:]
        if self.frame != spec.replace(stages=fixed):
            given, frame = spec.replace(stages=fixed).to_dict(), self.frame.to_dict()
            diff = [k for k, v in given.items() if frame.get(k) != v]
            raise ValueError(f"not in space {self.name}: the fixed part differs in {', '.join(diff)} "
                             f"(expected the frame {self.frame})")
        choice: dict[str, int] = {}
        for i, st in enumerate(self.stages):
            blocks = spec.stages[self.insert_at + i]
            where = f"not in space {self.name}: searched stage {i}"
            choice[f"s{i}.depth"] = _index(st.depths, len(blocks), f"{where} depth")
            choice[f"s{i}.filters"] = _index(st.filters, blocks[0].out, f"{where} filters")
            for j in range(max(st.depths)):
                choice[f"s{i}.b{j}.op"] = choice[f"s{i}.b{j}.e"] = 0
            for j, b in enumerate(blocks):
                at = f"{where} block {j} ({b.to_string()})"
                if b.out != blocks[0].out:
                    raise ValueError(f"{at}: its blocks share one width, got {b.out} after {blocks[0].out}")
                ops = st.block_ops(j)
                if b.kind == "mqa":
                    choice[f"s{i}.b{j}.op"] = _index(ops, MQA_OP, f"{at} op")
                elif b.kind == "uir":
                    choice[f"s{i}.b{j}.op"] = _index([op_name(o) for o in ops], op_name((b.a, b.k)), f"{at} op")
                    choice[f"s{i}.b{j}.e"] = _index(st.expansions, float(b.e), f"{at} expansion")
                else:
                    raise ValueError(f"{at}: a searched block is uir or mqa, got {b.kind}")
        back = self.to_spec(choice)
        if back != spec:  # strides, skip flags, act overrides, MQA settings
            bad = next((f"block {b.to_string()} (the space builds {c.to_string()})"
                        for b, c in zip(spec.blocks(), back.blocks()) if b != c), "its blocks")
            raise ValueError(f"not in space {self.name}: {bad}")
        return choice

    def contains_spec(self, spec: Union[NetSpec, str]) -> bool:
        try:
            self.encode(spec)
        except ValueError:
            return False
        return True

    # -- the schedule of MNv4's two-stage search (Sec. 4) --------------------------------------
    def coarse(self) -> "SearchSpace":
        """The coarse stage: depths and filters searched, every block an IB with a 3x3 middle
        depthwise conv and expansion 4 (MNv4 Sec. 4: "block fixed to IB e4 k3"); a stage whose
        choices lack those takes its nearest: the first op with a middle depthwise conv, the
        expansion closest to 4 (so the coarse paths stay members of the space)."""
        return replace(self, name=f"{self.name}.coarse", contains=(),
                       stages=tuple(st.restrict(ops=(_coarse_op(st),), expansions=(_mid_expansion(st),), mqa=None)
                                    for st in self.stages))

    def fine(self, coarse_choice: Mapping[str, int]) -> "SearchSpace":
        """The fine stage after ``coarse_choice`` (a choice of :meth:`coarse`): depth and filters
        fixed to it, each depthwise slot searched over the stage's ops ({absent, 3x3, 5x5} in the
        shipped spaces; MQA where offered), expansion 4 (MNv4 Sec. 4; the nearest where 4 is not
        a choice)."""
        coarse = self.coarse()
        coarse.check_choice(coarse_choice)
        stages = []
        for i, st in enumerate(self.stages):
            stages.append(st.restrict(depths=(coarse.stages[i].depths[coarse_choice[f"s{i}.depth"]],),
                                      filters=(coarse.stages[i].filters[coarse_choice[f"s{i}.filters"]],),
                                      expansions=(_mid_expansion(st),)))
        return replace(self, name=f"{self.name}.fine", contains=(), stages=tuple(stages))

    def with_width(self, width_mult: float) -> "SearchSpace":
        """The space with every channel count scaled by ``width_mult`` (the frame's)."""
        return replace(self, frame=self.frame.replace(width_mult=width_mult), contains=())

    # -- text and JSON -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"name": self.name, "frame": str(self.frame), "insert_at": self.insert_at,
                "stages": [st.to_dict() for st in self.stages], "contains": list(self.contains),
                "note": self.note}

    @classmethod
    def from_dict(cls, data: Mapping) -> "SearchSpace":
        _check_keys(data, ("name", "frame", "insert_at", "stages", "contains", "note"), "search space")
        missing = [k for k in ("name", "frame", "insert_at", "stages") if k not in data]
        if missing:
            raise ValueError(f"a search space needs {', '.join(missing)} (given: {', '.join(data)})")
        if not isinstance(data["stages"], list):
            raise ValueError(f"search space stages must be a list of stage objects, got {data['stages']!r}")
        return cls(name=data["name"], frame=load_spec(data["frame"]), insert_at=int(data["insert_at"]),
                   stages=tuple(StageSpace.from_dict(s) for s in data["stages"]),
                   contains=tuple(data.get("contains", ())), note=data.get("note", ""))

    def __str__(self) -> str:
        lines = [f"search space {self.name}: {self.size():.3g} architectures"
                 + (f"; contains {', '.join(self.contains)}" if self.contains else "")]
        lines.append(f"  frame {self.frame}")
        for i, st in enumerate(self.stages):
            ops = ", ".join(op_name(o) for o in st.ops) + (", mqa" if st.mqa else "")
            lines.append(f"  stage {i} (at {self.insert_at + i}, stride {st.stride}): depth {list(st.depths)}, "
                         f"filters {list(st.filters)}, ops {{{ops}}}, expansion {[_num(e) for e in st.expansions]}")
        return "\n".join(lines)


def _coarse_op(st: StageSpace) -> tuple[int, int]:
    """(0, 3), the IB k3 of MNv4's coarse stage, or the stage's first op with a middle dw conv."""
    return (0, 3) if (0, 3) in st.ops else next((op for op in st.first_ops() if op[1]), st.first_ops()[0])


def _mid_expansion(st: StageSpace) -> float:
    """4, MNv4's fixed expansion of both stages, or the stage's choice closest to it."""
    return min(st.expansions, key=lambda e: (abs(e - 4.0), e))


def _num(v: float) -> Union[int, float]:
    return int(v) if float(v).is_integer() else v


def _index(options: Sequence, value: Any, what: str) -> int:
    try:
        return list(options).index(value)
    except ValueError:
        raise ValueError(f"{what} {_num(value) if isinstance(value, float) else value} is not a choice "
                         f"(choices: {', '.join(str(_num(o) if isinstance(o, float) else o) for o in options)})") from None


def _check_keys(data: Any, known: Sequence[str], what: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"a {what} must be a JSON object, got {type(data).__name__}")
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            raise ValueError(f"unknown {what} field {key!r}" + (f"; did you mean {close[0]}?" if close
                                                                 else f" (expected {', '.join(known)})"))
