"""What NetAdapt prunes and how the weights follow (Yang et al. 2018,
https://arxiv.org/abs/1804.03230, Sec. 4.1): the channel spaces of a MobileNet V1-V4 model, the
width groups its identity shortcuts tie together, the spec of any set of widths, and the weight
transfer that keeps the filters of largest magnitude.

Width groups: the stem and every block whose output is added to another by an identity shortcut
share one width (the sum needs equal channels); they are cut together, with their consumers'
input channels. A block's expansion (the mid channels of ``ir`` / ``er`` / ``uir``) is written as
the ratio ``e`` that gives those channels at the block's (possibly pruned) input width; the head's
hidden width is exact. The width multiplier is folded into the channel counts (``width_mult=1``),
and a block that had no shortcut keeps none (``noskip``) when pruning makes its input and output
widths equal, so a pruned spec computes what the sliced weights were trained for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn as nn

from ..archs.spec import NetSpec
from ..layers import make_divisible
from ..models.mobilenet import MobileNet

#: block kinds whose identity shortcut appears whenever input and output widths are equal (stride 1)
SKIP_KINDS = ("ds", "ir", "er", "uir", "mqa")
EXPANDING = ("ir", "er", "uir")


class AdaptError(ValueError):
    """A NetAdapt run that cannot start or cannot reach its target (the message says why)."""


# -- structure: channel spaces, width groups, the prunable layers --------------------------------

@dataclass(frozen=True)
class Layer:
    """One prunable unit: ``key`` (``g<i>`` a width group, ``m:<block path>`` an expansion,
    ``hidden`` the head), ``kind`` (``filters``, ``expansion``, ``hidden``) and a readable name."""

    key: str
    kind: str
    name: str


@dataclass
class _Block:
    path: str
    spec: object   # BlockSpec
    in_space: str
    out_space: str
    has_skip: bool


class Structure:
    """The channel spaces of a :class:`~mobilenets.models.mobilenet.MobileNet` and which tensor
    dimension belongs to which: width groups (``g<i>``), expansions (``m:<path>``), squeeze-excite
    widths (``se:<path>``) and the head's hidden width (``hidden``). Every model adapted from one
    source has the same modules, so one structure serves them all; sizes are read per model."""

    def __init__(self, model: MobileNet):
        if not isinstance(model, MobileNet):
            raise AdaptError(f"NetAdapt adapts MobileNet V1-V4 and searched NetSpec models (a MobileNet); got a "
                             f"{type(model).__name__} (Mobile-Former and MobileNetV5 are not built from a NetSpec)")
        if model.head.pool.feat_mult() != 1:
            raise AdaptError(f"NetAdapt needs a head pooling to the backbone's width (global_pool 'avg', 'max' "
                             f"or 'avgmax'); this model pools with {model.head.pool.pool_type!r}")
        self.spec: NetSpec = model.spec
        parent: dict[str, str] = {"stem": "stem"}

        def find(a: str) -> str:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        self.blocks: list[_Block] = []
        prev = "stem"
        specs = model.spec.blocks()
        for (path, module), b in zip(model.blocks(), specs):
            parent[path] = path
            skip = bool(getattr(module, "has_skip", False))
            if skip:  # the shortcut adds input and output: one width
                parent[find(path)] = find(prev)
            self.blocks.append(_Block(path, b, prev, path, skip))
            prev = path
        roots: dict[str, str] = {}
        for name in ["stem"] + [b.path for b in self.blocks]:
            roots.setdefault(find(name), f"g{len(roots)}")
        self.space_of = {name: roots[find(name)] for name in parent}  # output name -> group
        for b in self.blocks:
            b.in_space, b.out_space = self.space_of[b.in_space], self.space_of[b.out_space]
        self.last = self.space_of[prev]
        self.hidden = bool(model.head.has_hidden)
        self.layers = self._layers()
        self.base_widths = self.sizes(model)   # what spec_for keeps where no width is given
        bn = model.stem.bn
        # a checkpoint loader may have set its library's BatchNorm settings: the spec carries them
        self.norm = ({"norm_eps": bn.eps, "norm_momentum": bn.momentum}
                     if isinstance(bn, nn.BatchNorm2d) and bn.momentum is not None else {})

    def _layers(self) -> list[Layer]:
        members: dict[str, list[str]] = {}
        for name, g in self.space_of.items():
            members.setdefault(g, []).append(name)
        # a grouped conv ties its input channels to its groups: such an input width stays
        frozen = {b.in_space for b in self.blocks if b.spec.kind == "er" and b.spec.gs}
        out = []
        for g, names in sorted(members.items(), key=lambda kv: int(kv[0][1:])):
            if g in frozen:
                continue
            names = sorted(names, key=lambda n: (n != "stem", [int(v) for v in n.split(".")[1:]]))
            tied = f" + {len(names) - 1} on its shortcut{'s' if len(names) > 2 else ''}" if len(names) > 1 else ""
            out.append(Layer(g, "filters", f"filters of {names[0]}{tied}"))
        for b in self.blocks:
            if b.spec.kind in EXPANDING and not b.spec.gs:
                out.append(Layer(f"m:{b.path}", "expansion", f"expansion of {b.path}"))
        if self.hidden:
            out.append(Layer("hidden", "hidden", "head hidden"))
        return out

    # -- sizes and widths -------------------------------------------------------------------------
    def widths(self, model: MobileNet) -> dict[str, int]:
        """Channels of every prunable layer of ``model`` (layer key -> channels)."""
        sizes = self.sizes(model)
        return {layer.key: sizes[layer.key] for layer in self.layers}

    def sizes(self, model: MobileNet) -> dict[str, int]:
        """Channels of every space of ``model`` (groups, expansions, SE, hidden)."""
        out = {self.space_of["stem"]: model.stem.conv.out_channels}
        for b, (_, m) in zip(self.blocks, model.blocks()):
            out[b.out_space] = _producer(m, b.spec.kind).out_channels
            if b.spec.kind in EXPANDING:
                out[f"m:{b.path}"] = m.mid_chs
            se = getattr(m, "se", None)
            if isinstance(se, nn.Module) and hasattr(se, "fc1"):
                out[f"se:{b.path}"] = se.fc1.out_channels
        if self.hidden:
            out["hidden"] = model.head.hidden.out_features
        return out

    def spec_for(self, widths: dict[str, int]) -> NetSpec:
        """The spec of the network with these widths (any layer not given keeps the source's):
        ``width_mult`` folded in, every expansion as the ratio giving its mid channels."""
        w = {**self.base_widths, **widths}
        stem = w[self.space_of["stem"]]
        stages, in_chs = [], stem
        it = iter(self.blocks)
        for st in self.spec.stages:
            rows = []
            for _ in st:
                b = next(it)
                out = w[b.out_space]
                kw: dict = {"out": out, "width": "scale" if make_divisible(out) == out else "fixed"}
                if b.spec.kind in EXPANDING:
                    kw["e"] = expansion_ratio(w[f"m:{b.path}"], in_chs)
                if (not b.has_skip and b.spec.kind in SKIP_KINDS and b.spec.stride == 1 and b.spec.skip
                        and in_chs == out):
                    kw["skip"] = False  # no shortcut appears where the source had none
                rows.append(replace(b.spec, **kw))
                in_chs = out
            stages.append(tuple(rows))
        head = replace(self.spec.head, hidden=w["hidden"]) if self.hidden else self.spec.head
        return self.spec.replace(stages=tuple(stages), stem=stem, width_mult=1.0, head=head,
                                 fix_stem_below=0.0 if make_divisible(stem) == stem else math.inf, **self.norm)

    # -- which dimension is which space -----------------------------------------------------------
    def rules(self) -> dict[str, tuple[Optional[str], Optional[str]]]:
        """Module path -> (output space, input space) of its weights (``None``: not a pruned space);
        a BatchNorm / bias / layer scale follows the output space, a depthwise conv (input space
        = output space) has one channel dimension."""
        r: dict[str, tuple[Optional[str], Optional[str]]] = {"stem": (self.space_of["stem"], None)}
        for b in self.blocks:
            p, I, O = b.path, b.in_space, b.out_space  # noqa: E741
            M, S = f"m:{p}", f"se:{p}"
            kind = b.spec.kind
            if kind == "cn":
                r[p] = (O, I)
            elif kind in ("ds", "dsa"):
                r.update({f"{p}.dw": (I, I), f"{p}.se.fc1": (S, I), f"{p}.se.fc2": (I, S), f"{p}.pw": (O, I)})
            elif kind == "ir":
                r.update({f"{p}.expand": (M, I), f"{p}.dw": (M, M), f"{p}.se.fc1": (S, M), f"{p}.se.fc2": (M, S),
                          f"{p}.project": (O, M)})
            elif kind == "er":
                r.update({f"{p}.expand": (M, I), f"{p}.project": (O, M)})
            elif kind == "uir":
                r.update({f"{p}.dw_start": (I, I), f"{p}.expand": (M, I), f"{p}.dw_mid": (M, M),
                          f"{p}.project": (O, M)})
            elif kind == "mqa":
                r.update({f"{p}.norm": (I, None), f"{p}.attn.q_norm": (I, None), f"{p}.attn.q": (None, I),
                          f"{p}.attn.k_down": (I, I), f"{p}.attn.k": (None, I), f"{p}.attn.v_down": (I, I),
                          f"{p}.attn.v": (None, I), f"{p}.attn.proj": (O, None)})
            r[f"{p}.layer_scale"] = (O, None)
        if self.hidden:
            r.update({"head.hidden": ("hidden", self.last), "head.norm": ("hidden", None),
                      "head.fc": (None, "hidden")})
        else:
            r["head.fc"] = (None, self.last)
        return r

    def tensor_spaces(self, name: str, t: torch.Tensor, rules: dict) -> Optional[tuple]:
        """The space of each dimension of state-dict entry ``name`` (``None`` where it is not a
        channel space), or ``None`` when no rule covers it."""
        owner = max((m for m in rules if name.startswith(m + ".")), key=len, default=None)
        if owner is None:
            return None
        out, inp = rules[owner]
        if t.ndim == 0:
            return ()
        if t.ndim == 1:
            return (out,)
        if out is not None and out == inp and t.shape[1] == 1:  # depthwise: (C, 1, k, k)
            return (out,) + (None,) * (t.ndim - 1)
        return (out, inp) + (None,) * (t.ndim - 2)

    def scores(self, model: MobileNet, space: str) -> torch.Tensor:
        """Importance of each channel of ``space`` in ``model``: the L2 norm of the filters that
        produce it, BatchNorm folded in (the deployed filter) and layer scale too; summed over
        the producers of a width group (their outputs add up)."""
        mods = dict(model.named_modules())
        if space == "hidden":
            return _filter_norm(model.head.hidden.weight, model.head.norm)
        if space.startswith("m:"):
            conv = mods[space[2:]].expand
            return _filter_norm(conv.conv.weight, conv.bn)
        if space.startswith("se:"):
            return mods[space[3:]].se.fc1.weight.detach().flatten(1).norm(dim=1)
        total = None
        producers = [("stem", model.stem, "cn")] + [(b.path, mods[b.path], b.spec.kind) for b in self.blocks]
        for name, m, kind in producers:
            if self.space_of[name] != space:
                continue
            prod = _producer(m, kind)
            s = _filter_norm(prod.weight, getattr(_conv_owner(m, kind), "bn", None))
            ls = getattr(m, "layer_scale", None)
            if ls is not None and hasattr(ls, "gamma"):
                s = s * ls.gamma.detach().abs()
            total = s if total is None else total + s
        if total is None:
            raise KeyError(f"no channel space {space!r} in this model")
        return total

    def transfer(self, old: MobileNet, new: MobileNet) -> MobileNet:
        """Load ``new`` (a pruned version of ``old``: same modules, fewer channels) from ``old``:
        in every space that shrank, the channels of largest :meth:`scores` are kept (in their
        order) and every producer and consumer (convs, BatchNorm, SE, layer scale, attention
        projections, the head) is sliced to them; everything else is copied unchanged."""
        old_sizes, new_sizes = self.sizes(old), self.sizes(new)
        keep: dict[str, torch.Tensor] = {}
        for space, n in new_sizes.items():
            if n > old_sizes[space]:
                raise ValueError(f"space {space}: the new model has {n} channels, more than the source's "
                                 f"{old_sizes[space]}; weights can only be kept when shrinking")
            if n < old_sizes[space]:
                keep[space] = torch.topk(self.scores(old, space), n, sorted=False).indices.sort().values
        rules = self.rules()
        src = old.state_dict()
        out = {}
        for name, target in new.state_dict().items():
            t = src[name]
            dims = self.tensor_spaces(name, t, rules)
            if dims is not None:
                for d, space in enumerate(dims):
                    if space in keep:
                        t = t.index_select(d, keep[space])
            if t.shape != target.shape:
                raise RuntimeError(f"weight transfer: {name} is {tuple(t.shape)} after slicing, the pruned model "
                                   f"has {tuple(target.shape)} (no rule maps its dimensions)")
            out[name] = t.clone()
        new.load_state_dict(out)
        return new


def expansion_ratio(mid: int, in_chs: int) -> float:
    """The shortest decimal ``e`` for which the builder's ``make_divisible(in_chs * e)`` gives
    ``mid`` channels (so the spec string stays readable)."""
    for digits in range(1, 9):
        e = round(mid / in_chs, digits)
        if e > 0 and make_divisible(in_chs * e) == mid:
            return e
    return mid / in_chs


def _producer(m: nn.Module, kind: str) -> nn.Conv2d:
    """The conv whose output is a block's output (the stem's conv for ``"cn"`` on the stem)."""
    if kind == "mqa":
        return m.attn.proj
    return _conv_owner(m, kind).conv


def _conv_owner(m: nn.Module, kind: str) -> Optional[nn.Module]:
    """The ConvNormAct producing a block's output (``None`` for attention: a bare projection)."""
    if kind == "mqa":
        return None
    if kind == "cn":
        return m
    return m.pw if kind in ("ds", "dsa") else m.project


def _filter_norm(weight: torch.Tensor, bn: Optional[nn.Module]) -> torch.Tensor:
    w = weight.detach().flatten(1)
    if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.running_var is not None:
        scale = (bn.weight.detach() if bn.affine else 1.0) / torch.sqrt(bn.running_var + bn.eps)
        w = w * scale[:, None]
    return w.norm(dim=1)


__all__ = ["AdaptError", "EXPANDING", "Layer", "SKIP_KINDS", "Structure", "expansion_ratio"]
