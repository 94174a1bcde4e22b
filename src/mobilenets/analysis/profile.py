"""Per-layer MACs, parameters and bytes moved, counted from the ops a forward pass runs.

How it counts
-------------
One forward pass runs on a zero input of ``(batch_size, in_chans, H, W)`` under two
interceptors:

* a ``TorchDispatchMode`` that sees every aten op after autograd has decomposed the
  Python-level calls. It records ``aten.convolution`` (conv / depthwise conv / transposed conv),
  ``aten.mm`` / ``addmm`` (``nn.Linear`` and 2-D ``@``), ``aten.bmm`` / ``baddbmm`` (batched
  ``torch.matmul`` / ``@`` / ``einsum``) and ``aten.mv`` / ``dot``;
* a ``TorchFunctionMode`` that catches ``F.scaled_dot_product_attention`` before it is
  lowered, so a fused attention is one ``attention`` record whatever kernel the backend picks
  (the ops it runs internally are not counted again).

Forward pre/post hooks on every module keep a stack of module names, so each op is
attributed to the innermost module running when it executes (``stages.3.2.attn.q`` for a
query projection, ``stages.3.2.attn`` for the attention product itself). A module that runs
several counted ops itself gets records ``name``, ``name#2``, ``name#3`` ...

MACs (multiply-accumulates; FLOPs / 2)
  conv: ``out_elems * in_chs / groups * kh * kw`` (transposed: ``in_elems * out_chs / groups *
  kh * kw``); matmul ``(.., n, k) @ (.., k, m)``: ``batch * n * k * m``; attention:
  ``Q.K^T`` + ``A.V`` = ``B * heads * Nq * Nkv * (key_dim + value_dim)``. Bias adds, softmax
  and scaling are not counted (the papers' convention).

Bytes (the roofline's memory traffic; MobileNetV4 paper section 4 does not state its own)
  * bytes per element come from ``dtype``: fp32 4, fp16 / bf16 2, int8 1, for weights and
    activations alike (the model itself runs in fp32; only the accounting changes);
  * weight bytes: every parameter / buffer operand of an op (weight and bias), read once per
    op;
  * activation bytes = the op's input activations + its output activation. A broadcast
    (stride-0, e.g. the one shared K/V head of Mobile MQA expanded over the query heads) is
    counted once, as stored; the attention score matrix is assumed to stay on chip (a fused,
    flash-style kernel), so attention moves Q, K, V and the output only;
  * elementwise ops (BatchNorm, activations, layer scale, residual adds, SE gating, pooling,
    softmax) are assumed fused into the producing op and are not separate layers.

``Profile.params`` is the weight (and bias) elements the counted ops read; BatchNorm
parameters fold into the convs at deployment, so they are not in it. ``Profile.model_params``
is ``sum(p.numel())`` over the whole model, as the papers' tables report it.

Why one module: the two interceptors, the per-op counting rules and the layer attribution are
one counting pass; the report types are the pass's result and nothing else builds them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Iterable, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from ..models.info import model_info

MIN_INPUT_SIZE = 32

#: bytes per element for the accounting dtypes
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
_DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16",
                  "bfloat16": "bf16", "qint8": "int8", "uint8": "int8", "quint8": "int8"}

_aten = torch.ops.aten
_CONV = {_aten.convolution.default, _aten._convolution.default}
_MM = {_aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default,
       _aten.mv.default, _aten.dot.default}
_SDPA = {F.scaled_dot_product_attention}
if hasattr(torch._C._nn, "scaled_dot_product_attention"):
    _SDPA.add(torch._C._nn.scaled_dot_product_attention)


def normalize_dtype(dtype: Union[str, torch.dtype]) -> str:
    """``"fp32"``, ``"float16"``, ``torch.bfloat16`` ... -> one of :data:`DTYPE_BYTES`' keys."""
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).replace("torch.", "")
    if not isinstance(dtype, str):
        raise ValueError(f"dtype must be one of {sorted(DTYPE_BYTES)}, got {dtype!r}")
    key = _DTYPE_ALIASES.get(dtype.lower(), dtype.lower())
    if key not in DTYPE_BYTES:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_BYTES)} (or float32/float16/"
                         f"bfloat16), got {dtype!r}")
    return key


@dataclass
class LayerRecord:
    """One counted op.

    Attributes:
        name: innermost module running the op (``#2``, ``#3`` for further ops of one module).
        kind: ``conv``, ``dwconv``, ``linear``, ``matmul`` or ``attention``.
        op: the aten op (or ``scaled_dot_product_attention``).
        module: the module's class name.
        out_shape: output shape.
        macs: multiply-accumulates. params: weight + bias elements the op reads.
        weight_bytes, input_bytes, output_bytes: bytes moved (see the module docstring).
    """

    name: str
    kind: str
    op: str
    module: str
    out_shape: tuple
    macs: int
    params: int
    weight_bytes: int
    input_bytes: int
    output_bytes: int

    @property
    def act_bytes(self) -> int:
        """Input + output activation bytes."""
        return self.input_bytes + self.output_bytes

    @property
    def bytes(self) -> int:
        """Weight + activation bytes: the op's memory traffic."""
        return self.weight_bytes + self.input_bytes + self.output_bytes

    @property
    def intensity(self) -> float:
        """Operational intensity, MACs per byte."""
        return self.macs / self.bytes if self.bytes else float("inf")


@dataclass
class Profile:
    """Per-layer records and totals for one model at one input size.

    Attributes:
        model: model name (registry name or class name). input_size: ``(H, W)``.
        batch_size, dtype: as profiled. layers: the :class:`LayerRecord` s in execution order.
        model_params: every parameter of the model (BatchNorm included).
    """

    model: str
    input_size: tuple
    batch_size: int
    dtype: str
    layers: list = field(default_factory=list)
    model_params: int = 0

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.layers)

    @property
    def params(self) -> int:
        return sum(r.params for r in self.layers)

    @property
    def weight_bytes(self) -> int:
        return sum(r.weight_bytes for r in self.layers)

    @property
    def act_bytes(self) -> int:
        return sum(r.act_bytes for r in self.layers)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.layers)

    def by_kind(self) -> dict:
        """``{kind: {"layers", "macs", "bytes"}}``."""
        out: dict = {}
        for r in self.layers:
            d = out.setdefault(r.kind, {"layers": 0, "macs": 0, "bytes": 0})
            d["layers"] += 1
            d["macs"] += r.macs
            d["bytes"] += r.bytes
        return out

    def by_stage(self) -> list:
        """Records summed per stage: the top-level module, or ``container.i`` for the children
        of a numbered container (``stem``, ``stages.0`` ... ``head``)."""
        groups: "OrderedDict[str, dict]" = OrderedDict()
        for r in self.layers:
            key = stage_of(r.name)
            g = groups.setdefault(key, dict(name=key, layers=0, macs=0, params=0, weight_bytes=0,
                                            input_bytes=0, output_bytes=0, out_shape=r.out_shape))
            g["layers"] += 1
            for k in ("macs", "params", "weight_bytes", "input_bytes", "output_bytes"):
                g[k] += getattr(r, k)
            g["out_shape"] = r.out_shape
        for g in groups.values():
            g["bytes"] = g["weight_bytes"] + g["input_bytes"] + g["output_bytes"]
        return list(groups.values())

    def totals(self) -> dict:
        return dict(macs=self.macs, params=self.params, model_params=self.model_params,
                    weight_bytes=self.weight_bytes, act_bytes=self.act_bytes, bytes=self.bytes,
                    layers=len(self.layers))

    def to_dict(self) -> dict:
        layers = []
        for r in self.layers:
            d = asdict(r)
            d["out_shape"] = list(r.out_shape)
            d["bytes"] = r.bytes
            layers.append(d)
        return dict(model=self.model, input_size=list(self.input_size), batch_size=self.batch_size,
                    dtype=self.dtype, totals=self.totals(), layers=layers)

    def __repr__(self) -> str:
        return (f"Profile({self.model!r}, input_size={self.input_size}, dtype={self.dtype!r}, "
                f"layers={len(self.layers)}, macs={self.macs / 1e6:.1f}M, "
                f"bytes={self.bytes / 2**20:.2f}MiB)")


def stage_of(name: str) -> str:
    """Group key of a record name: first path component, plus the index when the first
    component is a numbered container (``stages.3.2.attn`` -> ``stages.3``)."""
    parts = name.split("#")[0].split(".")
    if len(parts) > 1 and parts[1].isdigit():
        return ".".join(parts[:2])
    return parts[0] or "<root>"


# --------------------------------------------------------------------------------------------
def _unique_numel(t: torch.Tensor) -> int:
    """Elements actually stored behind a view: stride-0 (broadcast) dims count once."""
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            n *= size
    return n


def _storage_key(t: torch.Tensor) -> Optional[int]:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # pragma: no cover - exotic tensors
        return None


class _Counter:
    """Shared state of the two interceptors and the module hooks."""

    def __init__(self, weight_keys: set, bpe: int):
        self.weight_keys = weight_keys
        self.bpe = bpe
        self.stack: list = [("", "")]
        self.records: list = []
        self.ops_in_module: dict = {}
        self.suspend = 0  # > 0 inside a fused op counted as a whole (attention)

    def is_weight(self, t: torch.Tensor) -> bool:
        key = _storage_key(t)
        return key is not None and key != 0 and key in self.weight_keys

    def add(self, kind: str, op: str, macs: int, operands: Iterable, out: torch.Tensor) -> None:
        name, mod = self.stack[-1]
        k = self.ops_in_module.get(name, 0) + 1
        self.ops_in_module[name] = k
        rec_name = (name or "<root>") + (f"#{k}" if k > 1 else "")
        params = w_bytes = in_bytes = 0
        for t in operands:
            if not isinstance(t, torch.Tensor):
                continue
            if self.is_weight(t):
                params += t.numel()
                w_bytes += t.numel() * self.bpe
            else:
                in_bytes += _unique_numel(t) * self.bpe
        if kind == "matmul" and params:
            kind = "linear"  # one operand is a weight: nn.Linear / F.linear
        self.records.append(LayerRecord(rec_name, kind, op, mod, tuple(out.shape), int(macs),
                                        int(params), int(w_bytes), int(in_bytes),
                                        int(out.numel() * self.bpe)))


def _conv_macs(args, out: torch.Tensor) -> tuple:
    x, w = args[0], args[1]
    transposed = bool(args[6]) if len(args) > 6 else False
    groups = int(args[8]) if len(args) > 8 else 1
    k = 1
    for s in w.shape[2:]:
        k *= int(s)
    if transposed:  # weight (Cin, Cout/g, kh, kw): every input element feeds Cout/g * k outputs
        macs = x.numel() * w.shape[1] * k
    else:  # weight (Cout, Cin/g, kh, kw)
        macs = out.numel() * w.shape[1] * k
    depthwise = groups > 1 and groups == x.shape[1] and w.shape[1] == 1
    return macs, "dwconv" if depthwise else "conv"


def _mm_macs(func, args, out: torch.Tensor) -> tuple:
    if func in (_aten.addmm.default, _aten.baddbmm.default):
        a, b, operands = args[1], args[2], (args[0], args[1], args[2])
    else:
        a, b, operands = args[0], args[1], (args[0], args[1])
    if func is _aten.dot.default:
        return a.numel(), operands
    if func is _aten.mv.default:
        return a.numel(), operands
    # (.., n, k) @ (.., k, m): output elements * k
    return out.numel() * a.shape[-1], operands


class _DispatchCounter(TorchDispatchMode):
    def __init__(self, counter: _Counter):
        super().__init__()
        self.c = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.c.suspend:
            return out
        if func in _CONV:
            macs, kind = _conv_macs(args, out)
            bias = args[2] if len(args) > 2 else None
            self.c.add(kind, str(func.overloadpacket.__name__), macs, (args[0], args[1], bias), out)
        elif func in _MM:
            macs, operands = _mm_macs(func, args, out)
            self.c.add("matmul", str(func.overloadpacket.__name__), macs, operands, out)
        return out


class _FunctionCounter(TorchFunctionMode):
    """Counts ``scaled_dot_product_attention`` as one fused attention op."""

    def __init__(self, counter: _Counter):
        super().__init__()
        self.c = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _SDPA or self.c.suspend:
            return func(*args, **kwargs)
        q = args[0] if len(args) > 0 else kwargs["query"]
        k = args[1] if len(args) > 1 else kwargs["key"]
        v = args[2] if len(args) > 2 else kwargs["value"]
        self.c.suspend += 1
        try:
            out = func(*args, **kwargs)
        finally:
            self.c.suspend -= 1
        # Q.K^T: (.., Nq, dk) x (.., dk, Nkv); A.V: (.., Nq, Nkv) x (.., Nkv, dv)
        lead = 1
        for s in torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2]):
            lead *= int(s)
        nq, nkv = q.shape[-2], k.shape[-2]
        macs = lead * nq * nkv * (q.shape[-1] + v.shape[-1])
        self.c.add("attention", "scaled_dot_product_attention", macs, (q, k, v), out)
        return out


def _resolve_model(model: Union[str, nn.Module]) -> tuple:
    if isinstance(model, str):
        from ..factory import create_model
        m = create_model(model)  # unknown name: UnknownModelError (a KeyError and a ValueError)
        return m, model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a registry name or an nn.Module, got {type(model).__name__}")
    return model, model_info(model).name


def _resolve_size(input_size) -> tuple:
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    try:
        h, w = (int(s) for s in input_size)
    except (TypeError, ValueError):
        raise ValueError(f"input_size must be an int or (H, W), got {input_size!r}") from None
    if h < MIN_INPUT_SIZE or w < MIN_INPUT_SIZE:
        raise ValueError(f"input_size must be at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} "
                         f"(five stride-2 stages), got {h}x{w}")
    return h, w


@torch.no_grad()
def profile(model: Union[str, nn.Module], input_size: Union[int, Sequence[int]] = (224, 224),
            batch_size: int = 1, dtype: Union[str, torch.dtype] = "fp32") -> Profile:
    """Count MACs, weights and bytes moved per layer for one forward pass.

    Args:
        model: a registry name (built with random weights, 1000 classes) or a model instance.
        input_size: ``(H, W)`` or one int; at least 32.
        batch_size: images per forward (MACs and activation bytes scale with it, weights don't).
        dtype: the accounting dtype for bytes: ``fp32``, ``fp16``, ``bf16`` or ``int8``.

    Returns:
        a :class:`Profile` (records in execution order; totals as properties).

    Raises:
        KeyError (``UnknownModelError``): unknown model name.
        ValueError: input size below 32, bad batch size or dtype.
    """
    key = normalize_dtype(dtype)
    h, w = _resolve_size(input_size)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    model, name = _resolve_model(model)
    was_training = model.training
    model.eval()
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    run_dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    in_chans = model_info(model).in_chans
    tensors = list(model.parameters()) + list(model.buffers())
    weight_keys = {k for k in (_storage_key(t) for t in tensors) if k}
    counter = _Counter(weight_keys, DTYPE_BYTES[key])

    names = {m: n for n, m in model.named_modules()}

    def pre(mod, _inp):
        counter.stack.append((names.get(mod, ""), type(mod).__name__))

    def post(mod, _inp, _out):
        counter.stack.pop()

    handles = []
    for m in names:
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    x = torch.zeros(batch_size, in_chans, h, w, device=device, dtype=run_dtype)
    try:
        with _FunctionCounter(counter), _DispatchCounter(counter):
            model(x)
    finally:
        for hd in handles:
            hd.remove()
        model.train(was_training)
    return Profile(name, (h, w), batch_size, key, counter.records,
                   sum(p.numel() for p in model.parameters()))
