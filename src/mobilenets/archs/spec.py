"""Typed architecture specs and their compact string form.

A model is a :class:`NetSpec` (data); :class:`mobilenets.models.MobileNet` builds any of them.
Block rows are written in a compact string form, parsed into :class:`BlockSpec` and printed
back by :meth:`BlockSpec.to_string` (round trip tested)::

    kind_r{repeat}_k{kernel}_s{stride}_e{expand}_c{out}[_a{start_k}][_gs{group_size}][_se{ratio}]
        [_nre|_hs|_gelu][_h{heads}_d{key_dim}_v{kv_stride}_q{query_stride}][_noskip][_wmax|_wfix]

kinds: ``cn`` conv-BN-act, ``ds`` depthwise-separable (linear pointwise, residual), ``dsa``
(V1 form: activated pointwise, no residual), ``ir`` inverted residual, ``er`` fused IB,
``uir`` Universal Inverted Bottleneck (``a`` start dw kernel, ``k`` middle dw kernel, 0 = none),
``mqa`` Mobile MQA. ``nre``/``hs``/``gelu`` override the model activation for that block.
``wmax``: channels scale with width but never below the base (V2's last conv); ``wfix``:
channels never scale. ``gs``: group size (channels per group) of an ``er`` block's expansion
conv (MobileNet-EdgeTPU-V2's group convs). ``noskip``: no identity shortcut even where the
shapes allow one.

Depth scaling (:func:`parse_stages` ``depth_mult``) multiplies each stage's block count as
EfficientNet (Tan & Le 2019, https://arxiv.org/abs/1905.11946) and timm's ``*_d`` variants do.

A whole :class:`NetSpec` prints as one string (``str(spec)``, :meth:`NetSpec.to_string`), which
:func:`parse_net` reads back and ``create_model`` accepts wherever a model name goes::

    family:key=value,...:stage0 row,row,...:stage1 row,...

The header holds ``stem`` and ``act`` and every other field that differs from its default
(``head=1280,head_norm=1``: the :class:`HeadSpec`; ``width_mult=0.5``); stages are separated by
``:``, rows by ``,`` (identical rows folded into one ``r{n}`` row). Only shell-safe characters
are used, so a spec string needs no quoting. The JSON form (:meth:`NetSpec.to_dict`,
:func:`load_spec` for a file) lists every field. ``paper`` is documentation: neither form nor
equality carries it.

Why one module: the block rows, the whole-net string and the JSON form are one grammar over one
set of dataclasses; the printer and the parser of each sit beside the fields they read.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Collection, Optional, Union

BLOCK_KINDS = ("cn", "ds", "dsa", "ir", "er", "uir", "mqa")
_ACT_TOKENS = {"nre": "relu", "hs": "hard_swish", "gelu": "gelu", "re6": "relu6"}
_ACT_TO_TOKEN = {v: k for k, v in _ACT_TOKENS.items()}


@dataclass(frozen=True)
class BlockSpec:
    """One block row.

    Attributes:
        kind: one of ``BLOCK_KINDS``.
        out: output channels before width scaling.
        stride: spatial stride of the block.
        k: main kernel (conv kernel, depthwise kernel, UIB middle dw kernel; 0 = none).
        a: UIB start depthwise kernel (0 = none).
        e: expansion ratio (mid channels = make_divisible(in * e, 8)).
        se: squeeze-excite ratio of the gated width (0 = no SE).
        act: activation override (``None``: the model's).
        heads, key_dim, kv_stride, query_stride: Mobile MQA settings.
        width: ``"scale"``, ``"max"`` (never below base) or ``"fixed"``.
        gs: group size of an ``er`` block's expansion conv (0: an ungrouped conv).
        skip: allow the identity shortcut (``noskip`` rows: no shortcut at all).
    """

    kind: str
    out: int
    stride: int = 1
    k: int = 3
    a: int = 0
    e: float = 1.0
    se: float = 0.0
    act: Optional[str] = None
    heads: int = 0
    key_dim: int = 0
    kv_stride: int = 1
    query_stride: int = 1
    width: str = "scale"
    gs: int = 0
    skip: bool = True

    def __post_init__(self):
        # Every field is checked here, so a bad row fails with its name, not deep inside torch.
        if self.kind not in BLOCK_KINDS:
            raise ValueError(f"unknown block kind {self.kind!r}; expected one of {BLOCK_KINDS}")
        if self.out < 1:
            raise ValueError(f"{self.kind} block: output channels (c) must be >= 1, got {self.out}")
        if self.stride not in (1, 2):
            raise ValueError(f"{self.kind} block: stride must be 1 or 2 (s), got {self.stride}")
        # Kernels are odd: 'same' padding (k - 1) // 2 keeps the residual shapes equal.
        # Only the UIB may drop a depthwise conv (0); its start kernel ``a`` exists only there.
        min_k = 0 if self.kind == "uir" else 1
        if self.k < min_k or (self.k and self.k % 2 == 0):
            raise ValueError(f"{self.kind} block: kernel (k) must be an odd size >= 1"
                             f"{' or 0 (none)' if min_k == 0 else ''}, got {self.k}")
        if self.kind == "uir":
            if self.a < 0 or (self.a and self.a % 2 == 0):
                raise ValueError(f"uir block: start depthwise kernel (a) must be 0 or odd, got {self.a}")
            if self.stride > 1 and not (self.a or self.k):
                raise ValueError("uir block: stride (s) 2 needs a start (a) or middle (k) depthwise "
                                 "conv (the FFN form a0 k0 cannot downsample)")
        elif self.a:
            raise ValueError(f"{self.kind} block: a start depthwise kernel (a) is a uir option, got a{self.a}")
        if not self.e > 0:
            raise ValueError(f"{self.kind} block: expansion (e) must be > 0, got {self.e}")
        if not 0 <= self.se <= 1:
            raise ValueError(f"{self.kind} block: squeeze-excite ratio (se) must be in [0, 1], got {self.se}")
        if self.se and self.kind not in ("ds", "dsa", "ir"):
            raise ValueError(f"{self.kind} block: squeeze-excite (se) is an option of ds, dsa and ir blocks")
        if self.gs < 0 or (self.gs and self.kind != "er"):
            raise ValueError(f"{self.kind} block: group size (gs) is an er block option (>= 1), got gs{self.gs}")
        if self.width not in ("scale", "max", "fixed"):
            raise ValueError(f"width must be 'scale', 'max' or 'fixed', got {self.width!r}")
        if self.kind == "mqa":
            if self.heads <= 0 or self.key_dim <= 0:
                raise ValueError(f"an mqa block needs heads (h) and key_dim (d) >= 1, "
                                 f"got h{self.heads} d{self.key_dim}")
            if self.stride != 1:
                raise ValueError("mqa block: stride (s) must be 1 (attention keeps the resolution; "
                                 f"downsample in the block before), got {self.stride}")
            for name, v in (("kv_stride (v)", self.kv_stride), ("query_stride (q)", self.query_stride)):
                if v not in (1, 2):
                    raise ValueError(f"mqa block: {name} must be 1 or 2, got {v}")
        elif self.heads or self.key_dim or self.kv_stride != 1 or self.query_stride != 1:
            raise ValueError(f"{self.kind} block: heads/key_dim/kv_stride/query_stride (h, d, v, q) "
                             "are mqa options")

    def to_string(self, repeat: int = 1) -> str:
        def num(v: float) -> str:
            return str(int(v)) if float(v).is_integer() else repr(float(v))

        parts = [self.kind, f"r{repeat}", f"k{self.k}", f"s{self.stride}"]
        if self.e != 1.0 or self.kind in ("ir", "er", "uir"):
            parts.append(f"e{num(self.e)}")
        parts.append(f"c{self.out}")
        if self.a:
            parts.append(f"a{self.a}")
        if self.gs:
            parts.append(f"gs{self.gs}")
        if self.se:
            parts.append(f"se{num(self.se)}")
        if self.act is not None:
            parts.append(_ACT_TO_TOKEN.get(self.act, f"act-{self.act}"))
        if self.kind == "mqa":
            parts += [f"h{self.heads}", f"d{self.key_dim}", f"v{self.kv_stride}", f"q{self.query_stride}"]
        if not self.skip:
            parts.append("noskip")
        if self.width != "scale":
            parts.append({"max": "wmax", "fixed": "wfix"}[self.width])
        return "_".join(parts)


_TOKEN = re.compile(r"^([a-z]+)(\d+(?:\.\d+)?)$")


def parse_block(text: str) -> list[BlockSpec]:
    """Parse one compact row into ``repeat`` identical-but-for-stride specs (only the first of
    a repeated row keeps the stride)."""
    tokens = text.strip().split("_")
    kind, opts = tokens[0], {}
    kw: dict = {}
    for tok in tokens[1:]:
        if tok in _ACT_TOKENS:
            kw["act"] = _ACT_TOKENS[tok]
        elif tok.startswith("act-"):
            kw["act"] = tok[4:]
        elif tok == "noskip":
            kw["skip"] = False
        elif tok in ("wmax", "wfix"):
            kw["width"] = {"wmax": "max", "wfix": "fixed"}[tok]
        else:
            m = _TOKEN.match(tok)
            if not m:
                raise ValueError(f"cannot parse token {tok!r} in block string {text!r}")
            opts[m.group(1)] = m.group(2)
    known = {"r", "k", "s", "e", "c", "a", "gs", "se", "h", "d", "v", "q"}
    unknown = set(opts) - known
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} in block string {text!r}")
    if "c" not in opts:
        raise ValueError(f"block string {text!r} has no output channels (c...)")
    repeat = int(opts.get("r", 1))
    if repeat < 1:
        raise ValueError(f"block string {text!r}: repeat (r) must be >= 1, got {repeat}")
    for name in ("r", "k", "s", "c", "a", "gs", "h", "d", "v", "q"):
        if name in opts and not opts[name].isdigit():
            raise ValueError(f"block string {text!r}: {name} takes a whole number, got {opts[name]!r}")
    spec = BlockSpec(
        kind=kind, out=int(opts["c"]), stride=int(opts.get("s", 1)), k=int(opts.get("k", 3)),
        a=int(opts.get("a", 0)), gs=int(opts.get("gs", 0)), e=float(opts.get("e", 1.0)), se=float(opts.get("se", 0.0)),
        heads=int(opts.get("h", 0)), key_dim=int(opts.get("d", 0)), kv_stride=int(opts.get("v", 1)),
        query_stride=int(opts.get("q", 1)), **kw)
    return [spec] + [replace(spec, stride=1)] * (repeat - 1)


def scale_repeats(repeats: list[int], depth_mult: float) -> list[int]:
    """Scale the repeats of one stage's rows by ``depth_mult``, as EfficientNet scales depth
    (the stage total rounded up) and timm's ``decode_arch_def`` (``depth_trunc="ceil"``)
    shares it out: row by row from the last, each row getting its rounded proportional share
    of what is left (so the first row, often the strided one, is the last to grow)."""
    if depth_mult == 1.0:
        return list(repeats)
    left, left_scaled = sum(repeats), int(math.ceil(sum(repeats) * depth_mult))
    out = []
    for r in reversed(repeats):
        rs = max(1, round(r / left * left_scaled))
        out.append(rs)
        left, left_scaled = left - r, left_scaled - rs
    return out[::-1]


def parse_stages(rows: list[list[str]], depth_mult: float = 1.0,
                 fixed_depth: Collection[int] = ()) -> tuple[tuple[BlockSpec, ...], ...]:
    """Parse a list of stages, each a list of compact rows.

    Args:
        rows: the stages' rows.
        depth_mult: block-count multiplier per stage (:func:`scale_repeats`); only the first
            block of a repeated row keeps the row's stride.
        fixed_depth: indices of stages whose depth never scales (timm's ``fix_first_last``).
    """
    if not depth_mult > 0:
        raise ValueError(f"depth_mult must be > 0, got {depth_mult}")
    stages = []
    for si, stage in enumerate(rows):
        parsed = [parse_block(row) for row in stage]
        mult = 1.0 if si in fixed_depth else depth_mult
        repeats = scale_repeats([len(p) for p in parsed], mult)
        stages.append(tuple(b for p, r in zip(parsed, repeats)
                            for b in [p[0]] + [replace(p[0], stride=1)] * (r - 1)))
    return tuple(stages)


@dataclass(frozen=True)
class HeadSpec:
    """Classifier head: global average pool -> [hidden Linear (+BN) + act] -> dropout -> Linear.

    Attributes:
        hidden: hidden width (0: no hidden layer, as V1/V2). Not scaled by width_mult.
        norm: BatchNorm on the hidden layer (V4) instead of a bias (V3).
        act: activation of the hidden layer (``None``: the model's).
        bias: a bias on the hidden layer when it has no norm (timm's ``head_bias``; False in
            timm's ``mobilenetv3_rw``).
    """

    hidden: int = 0
    norm: bool = False
    act: Optional[str] = None
    bias: bool = True


@dataclass(frozen=True)
class NetSpec:
    """A whole backbone + classifier.

    Attributes:
        family: registry family name (``mobilenetv1`` ... ``mobilenetv4``).
        stages: tuple of stages, each a tuple of :class:`BlockSpec`.
        stem: stem conv channels (``stem_k`` x ``stem_k``, stride 2).
        stem_k: stem kernel size (3; 5 and 7 in MobileNet-EdgeTPU-V2).
        act: default activation. stem_act: stem activation (default ``act``).
        fix_stem_below: the stem keeps its width when ``width_mult`` is below this (``inf``:
            always, timm's ``fix_stem``).
        head: classifier head.
        layer_scale: init value of layer scale on ``uir`` and ``mqa`` blocks (``None``: off).
        aa: anti-aliasing layer on strided blocks (``None``, ``"avg"``, ``"blurpc"``).
        norm_eps, norm_momentum: BatchNorm settings.
        fixed_norm: ``norm_eps`` / ``norm_momentum`` are the ones the reference checkpoints
            were trained with, whatever library wrote them (TF ports and timm's
            ``mobilenetv3_rw`` fix BatchNorm eps 1e-3 in their definition): loading one keeps
            them instead of applying the source library's usual settings.
        pad_type: conv padding, ``""`` (symmetric) or ``"same"`` (TensorFlow "SAME", for
            TF-ported checkpoints; see :func:`mobilenets.layers.create_conv2d`).
        se_act: activation inside squeeze-excite (``None``: the block's; V3's SE uses ReLU).
        se_divisor: SE squeeze channels are ``make_divisible(chs * se, se_divisor)`` (8, the
            V3 paper's code); 1: plain ``round`` (timm's ``mobilenetv3_rw``).
        drop_rate: default classifier dropout.
        paper: reference link.
        last_stage_is_head: the last stage is the head's pre-pool conv (V2's 1x1 to 1280,
            timm's ``conv_head``): ``forward_features`` runs it, but it is no feature level.
    """

    family: str
    stages: tuple[tuple[BlockSpec, ...], ...]
    stem: int
    act: str
    head: HeadSpec = field(default_factory=HeadSpec)
    stem_act: Optional[str] = None
    stem_k: int = 3
    fix_stem_below: float = 0.0
    layer_scale: Optional[float] = None
    aa: Optional[str] = None
    norm_eps: float = 1e-5
    norm_momentum: float = 0.1
    fixed_norm: bool = False
    pad_type: str = ""
    se_act: Optional[str] = "relu"
    se_divisor: int = 8
    drop_rate: float = 0.2
    paper: str = field(default="", compare=False)
    last_stage_is_head: bool = False
    width_mult: float = 1.0

    def __post_init__(self):
        if not self.stages or not all(self.stages):
            raise ValueError(f"{self.family}: stages must be a non-empty tuple of non-empty stages")
        bad = [b for st in self.stages for b in st if not isinstance(b, BlockSpec)]
        if bad:
            raise ValueError(f"{self.family}: every block of stages must be a BlockSpec "
                             f"(parse_stages turns strings into them), got {type(bad[0]).__name__}")
        if self.stem < 1:
            raise ValueError(f"{self.family}: stem channels must be >= 1, got {self.stem}")
        if self.stem_k < 1 or self.stem_k % 2 == 0:
            raise ValueError(f"{self.family}: stem_k must be an odd kernel size >= 1, got {self.stem_k}")
        if self.pad_type not in ("", "same"):
            raise ValueError(f"{self.family}: pad_type must be '' or 'same', got {self.pad_type!r}")
        if self.se_divisor < 1:
            raise ValueError(f"{self.family}: se_divisor must be >= 1, got {self.se_divisor}")
        if self.aa not in (None, "avg", "blurpc"):
            raise ValueError(f"{self.family}: aa must be None, 'avg' or 'blurpc', got {self.aa!r}")
        if self.layer_scale is not None and not self.layer_scale > 0:
            raise ValueError(f"{self.family}: layer_scale must be None or > 0, got {self.layer_scale}")
        if not self.norm_eps > 0 or not 0 <= self.norm_momentum <= 1:
            raise ValueError(f"{self.family}: norm_eps must be > 0 and norm_momentum in [0, 1], "
                             f"got {self.norm_eps}, {self.norm_momentum}")
        if not 0 <= self.drop_rate < 1:
            raise ValueError(f"{self.family}: drop_rate must be in [0, 1), got {self.drop_rate}")
        if not (isinstance(self.width_mult, (int, float)) and 0 < self.width_mult < math.inf):
            raise ValueError(f"{self.family}: width_mult must be a number > 0, got {self.width_mult!r}")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.family):
            raise ValueError(f"family must be a lower-case identifier (letters, digits, _), got {self.family!r}")

    def blocks(self) -> list[BlockSpec]:
        return [b for s in self.stages for b in s]

    def to_rows(self) -> list[list[str]]:
        """Stages as compact strings (one row per block; parse_stages inverts it)."""
        return [[b.to_string() for b in stage] for stage in self.stages]

    def replace(self, **kw) -> "NetSpec":
        return replace(self, **kw)

    def to_string(self) -> str:
        """The one-line spec string (module docstring); :func:`parse_net` inverts it."""
        header = [f"stem={self.stem}", f"act={self.act}"]
        for f, kind in _header_fields():
            value = getattr(self, f.name)
            if f.name not in ("stem", "act") and value != f.default:
                header.append(f"{f.name}={_format_value(value)}")
        head_default = HeadSpec()
        for name, value in (("hidden", self.head.hidden), ("norm", self.head.norm), ("act", self.head.act),
                            ("bias", self.head.bias)):
            if value != getattr(head_default, name):
                header.append(f"head{'' if name == 'hidden' else '_' + name}={_format_value(value)}")
        stages = [",".join(_folded_rows(stage)) for stage in self.stages]
        return ":".join([self.family, ",".join(header)] + stages)

    __str__ = to_string

    @classmethod
    def from_string(cls, text: str) -> "NetSpec":
        """:func:`parse_net`."""
        return parse_net(text)

    def to_dict(self) -> dict:
        """Every field as plain JSON values (stages as row strings); :meth:`from_dict` inverts it."""
        out: dict[str, Any] = {"family": self.family}
        out.update((f.name, getattr(self, f.name)) for f, _ in _header_fields())
        out["head"] = {"hidden": self.head.hidden, "norm": self.head.norm, "act": self.head.act,
                       "bias": self.head.bias}
        out["stages"] = [_folded_rows(stage) for stage in self.stages]
        if self.paper:
            out["paper"] = self.paper
        if math.isinf(out["fix_stem_below"]):
            out["fix_stem_below"] = "inf"   # JSON has no infinity
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "NetSpec":
        """A spec from :meth:`to_dict`'s form; missing fields take their defaults, an unknown
        key is an error naming the closest field."""
        if not isinstance(data, dict):
            raise ValueError(f"a spec dict must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ValueError(f"unknown NetSpec field {key!r}{_closest(key, known)}")
        missing = [k for k in ("family", "stem", "act", "stages") if k not in data]
        if missing:
            raise ValueError(f"a spec needs {', '.join(missing)} (given: {', '.join(data) or 'nothing'})")
        kw = {f.name: _parse_value(f.name, kind, data[f.name]) for f, kind in _header_fields() if f.name in data}
        head = data.get("head", {})
        if not isinstance(head, dict) or set(head) - {"hidden", "norm", "act", "bias"}:
            raise ValueError(f"head must be an object with hidden, norm, act, bias, got {head!r}")
        stages = data["stages"]
        if not isinstance(stages, list) or not all(isinstance(st, list) for st in stages):
            raise ValueError(f"stages must be a list of lists of block rows, got {stages!r}")
        return cls(family=data["family"], stages=parse_stages(stages), head=HeadSpec(**head),
                   paper=data.get("paper", ""), **kw)


def _folded_rows(stage: tuple[BlockSpec, ...]) -> list[str]:
    """A stage's rows with runs of identical blocks (all but the first stride 1) as one row."""
    rows, i = [], 0
    while i < len(stage):
        first, n = stage[i], 1
        while i + n < len(stage) and stage[i + n] == replace(first, stride=1):
            n += 1
        rows.append(first.to_string(n))
        i += n
    return rows


_HEADER_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "Optional[str]": (str, None),
                 "Optional[float]": (float, None)}


def _header_fields() -> list[tuple[Any, Any]]:
    """The scalar NetSpec fields the header / dict carry (all but family, stages, head, paper),
    with their value type (a tuple: optional)."""
    out = []
    for f in fields(NetSpec):
        if f.name in ("family", "stages", "head", "paper"):
            continue
        if f.type not in _HEADER_TYPES:  # a new field of another type must be given a text form
            raise TypeError(f"NetSpec.{f.name}: no text form for type {f.type}")
        out.append((f, _HEADER_TYPES[f.type]))
    return out


def _format_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _parse_value(name: str, kind: Any, value: Any) -> Any:
    """A header / dict value of field ``name`` as its type (text from a string, or a JSON value)."""
    optional = isinstance(kind, tuple)
    base = kind[0] if optional else kind
    if value is None or (optional and value == "none"):
        if optional:
            return None
        raise ValueError(f"{name} must be a {base.__name__}, got none")
    try:
        if base is bool:
            if isinstance(value, bool) or value in ("0", "1", 0, 1):
                return bool(int(value))
            raise ValueError
        if base is int and isinstance(value, str) and not re.fullmatch(r"-?\d+", value):
            raise ValueError
        if base is str and not isinstance(value, str):
            raise ValueError
        return base(value)
    except (TypeError, ValueError):
        expected = {bool: "0 or 1", int: "a whole number", float: "a number", str: "a string"}[base]
        raise ValueError(f"spec field {name} must be {expected}{' or none' if optional else ''}, "
                         f"got {value!r}") from None


def _closest(word: str, options: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f"; did you mean {close[0]}?" if close else f" (expected one of {', '.join(sorted(options))})"


def is_spec_string(text: str) -> bool:
    """Whether ``text`` is meant as a spec string (``family:...``; no registry name has a ``:``)."""
    return isinstance(text, str) and ":" in text


def model_label(name: str, limit: int = 40) -> str:
    """A short label for tables and folder names: a spec string longer than ``limit`` becomes
    ``family-spec-<first 8 hex of its SHA-1>`` (the same string, the same label); a ``.json``
    spec file its stem; anything else stays as it is."""
    import hashlib

    if is_spec_string(name) and len(name) > limit:
        return f"{name.split(':', 1)[0]}-spec-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    if name.lower().endswith(".json"):
        return Path(name).stem
    return name


def parse_net(text: str) -> NetSpec:
    """A :class:`NetSpec` from its one-line string (``str(spec)``; module docstring).

    Raises:
        ValueError: naming the part that does not parse and what was expected there.
    """
    parts = text.strip().split(":")
    if len(parts) < 3 or "=" not in parts[1]:
        raise ValueError(f"a spec string is family:key=value,...:stage:stage... (header then at least one "
                         f"stage, ':' between them), got {text!r}")
    family, header, stage_texts = parts[0], parts[1], parts[2:]
    data: dict[str, Any] = {"family": family, "head": {}}
    head_keys = {"head": "hidden", "head_norm": "norm", "head_act": "act", "head_bias": "bias"}
    head_types = {"hidden": int, "norm": bool, "act": (str, None), "bias": bool}
    kinds = {f.name: kind for f, kind in _header_fields()}
    for item in header.split(","):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"spec header item {item!r} is not key=value (in {text!r})")
        if key in head_keys:
            data["head"][head_keys[key]] = _parse_value(key, head_types[head_keys[key]], value)
        elif key in kinds:
            data[key] = _parse_value(key, kinds[key], value)
        else:
            raise ValueError(f"unknown spec header key {key!r}{_closest(key, list(kinds) + list(head_keys))}")
    empty = [i for i, st in enumerate(stage_texts) if not st.strip()]
    if empty:
        raise ValueError(f"spec string stage {empty[0]} is empty (two ':' in a row?) in {text!r}")
    data["stages"] = [st.split(",") for st in stage_texts]
    return NetSpec.from_dict(data)


def load_spec(source: Union[str, Path, dict, NetSpec]) -> NetSpec:
    """A :class:`NetSpec` from a spec string, a JSON file (:meth:`NetSpec.to_dict`'s form), a
    dict of that form, or a spec (returned as is)."""
    if isinstance(source, NetSpec):
        return source
    if isinstance(source, dict):
        return NetSpec.from_dict(source)
    if isinstance(source, str) and is_spec_string(source):
        return parse_net(source)
    path = Path(source)
    if path.suffix.lower() != ".json":
        raise ValueError(f"expected a spec string (family:key=value,...:stages) or a .json spec file, got {str(source)!r}")
    if not path.is_file():
        raise FileNotFoundError(f"spec file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"spec file {str(path)!r} is not JSON: {e}") from None
    try:
        return NetSpec.from_dict(data)
    except (ValueError, TypeError) as e:
        raise ValueError(f"spec file {str(path)!r}: {e}") from None
