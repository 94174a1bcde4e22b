"""Key layouts of other libraries' checkpoints, mapped onto ours (timm's, Gemma 3n's vision
tower, torchvision's, the official Mobile-Former code's).

Each source layout is a function ``(state_dict, model) -> (converted, unmapped_keys)``. Block
internals are mapped by our block's class (the model says which block sits where), so a timm
``bn1`` means the expand norm in an inverted residual and the depthwise norm in a
depthwise-separable block. BatchNorm eps/momentum of the source are applied to the model
(timm trains V3 with eps 1e-5, torchvision with 1e-3).

The official Mobile-Former layout (github.com/AAboys/MobileFormer: ``tokens.weight``,
``features.i.local_global...``, ``classifier...``) maps onto :class:`MobileFormer` by
(official prefix, our prefix) pairs per block; :func:`export_mobileformer_official` runs the
same pairs backwards.
"""

from __future__ import annotations

import re
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn as nn

from ..blocks import (ConvBlock, DepthwiseSeparable, FusedIB, InvertedResidual, LiteBottleneck,
                      MobileBottleneck, MobileDownsample, MobileFormerBlock, MobileMQA,
                      UniversalInvertedBottleneck)
from ..models.mobilenetv5 import MobileNetV5

StateDict = dict[str, torch.Tensor]

# timm block internals -> ours, by our block class (prefix pairs, matched per dotted component).
_TIMM_BLOCK: dict[type, list[tuple[str, str]]] = {
    ConvBlock: [("conv", "conv"), ("bn1", "bn")],
    DepthwiseSeparable: [("conv_dw", "dw.conv"), ("bn1", "dw.bn"), ("se.conv_reduce", "se.fc1"),
                         ("se.conv_expand", "se.fc2"), ("conv_pw", "pw.conv"), ("bn2", "pw.bn")],
    InvertedResidual: [("conv_pw", "expand.conv"), ("bn1", "expand.bn"), ("conv_dw", "dw.conv"),
                       ("bn2", "dw.bn"), ("se.conv_reduce", "se.fc1"), ("se.conv_expand", "se.fc2"),
                       ("conv_pwl", "project.conv"), ("bn3", "project.bn")],
    FusedIB: [("conv_exp", "expand.conv"), ("bn1", "expand.bn"), ("conv_pwl", "project.conv"),
              ("bn2", "project.bn")],
    UniversalInvertedBottleneck: [("dw_start", "dw_start"), ("pw_exp", "expand"), ("dw_mid", "dw_mid"),
                                  ("pw_proj", "project"), ("layer_scale", "layer_scale")],
    MobileMQA: [("norm", "norm"), ("attn.query.proj", "attn.q"), ("attn.query.norm", "attn.q_norm"),
                ("attn.key.down_conv", "attn.k_down.conv"), ("attn.key.norm", "attn.k_down.bn"),
                ("attn.key.proj", "attn.k"), ("attn.value.down_conv", "attn.v_down.conv"),
                ("attn.value.norm", "attn.v_down.bn"), ("attn.value.proj", "attn.v"),
                ("attn.output.proj", "attn.proj"), ("layer_scale", "layer_scale")],
}

# torchvision: the ordered parts of a block's Sequential, by our block class.
_CNA = {"0": "conv", "1": "bn"}  # Conv2dNormActivation children


def _map_prefix(rest: str, table: list[tuple[str, str]]) -> Optional[str]:
    for src, dst in table:
        if rest == src or rest.startswith(src + "."):
            return dst + rest[len(src):]
    return None


def _blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(f"stages.{si}.{bi}", blk) for si, stage in enumerate(model.stages)
            for bi, blk in enumerate(stage)]


def _timm_top(model: nn.Module) -> list[tuple[str, str]]:
    """timm's keys outside ``blocks`` -> ours (prefix pairs), by model."""
    if isinstance(model, MobileNetV5):
        # the stem is a ConvNormAct in timm too; the MSFA's FFN is a UIB; pooled Linear classifier
        ffn = [(f"msfa.ffn.{s}", f"msfa.ffn.{d}") for s, d in _TIMM_BLOCK[UniversalInvertedBottleneck]]
        return [("conv_stem", "stem"), ("msfa.norm", "msfa.norm"), *ffn, ("classifier", "head.fc")]
    stages = model.stages
    has_hidden = isinstance(model.head.hidden, nn.Linear)
    last = f"stages.{len(stages) - 1}.0"  # EfficientNet-class conv_head/bn2 = our last cn block
    top = [("conv_stem", "stem.conv"), ("bn1", "stem.bn"), ("classifier", "head.fc")]
    top += ([("conv_head", "head.hidden"), ("norm_head", "head.norm")] if has_hidden
            else [("conv_head", f"{last}.conv"), ("bn2", f"{last}.bn")])
    return top


def _map_timm(sd: StateDict, model: nn.Module) -> tuple[StateDict, list[str]]:
    out, unmapped = {}, []
    stages = model.stages
    top = _timm_top(model)
    for k, v in sd.items():
        m = re.match(r"^blocks\.(\d+)\.(\d+)\.(.+)$", k)
        new = None
        if m:
            si, bi, rest = int(m[1]), int(m[2]), m[3]
            if si < len(stages) and bi < len(stages[si]):
                table = _TIMM_BLOCK.get(type(stages[si][bi]))
                sub = _map_prefix(rest, table) if table else None
                new = f"stages.{si}.{bi}.{sub}" if sub else None
        else:
            new = _map_prefix(k, top)
        if new is None:
            unmapped.append(k)
        else:
            out[new] = v
    return out, unmapped


#: where Gemma 3n checkpoints (Hugging Face transformers' Gemma3n) keep the vision tower: timm's
#: MobileNetV5 keys under this prefix (timm's mobilenetv5 ``checkpoint_filter_fn`` strips it)
GEMMA3N_VISION_PREFIX = "model.vision_tower.timm_model."


def _map_gemma3n(sd: StateDict, model: nn.Module) -> tuple[StateDict, list[str]]:
    """The vision tower of a Gemma 3n checkpoint, in timm's layout under
    :data:`GEMMA3N_VISION_PREFIX`; the checkpoint's other parts (the language model, the audio
    tower, the multimodal embedders) are not this model's and are left out, as timm's filter does."""
    n = len(GEMMA3N_VISION_PREFIX)
    return _map_timm({k[n:]: v for k, v in sd.items() if k.startswith(GEMMA3N_VISION_PREFIX)}, model)


def _tv_parts(blk: nn.Module) -> list[str]:
    """Our sub-module names in the order of torchvision's block Sequential."""
    has_se = not isinstance(getattr(blk, "se", nn.Identity()), nn.Identity)
    if isinstance(blk, DepthwiseSeparable):
        return ["dw"] + (["se"] if has_se else []) + ["pw"]
    if isinstance(blk, InvertedResidual):
        return ["expand", "dw"] + (["se"] if has_se else []) + ["project"]
    raise KeyError(type(blk).__name__)


def _map_torchvision(sd: StateDict, model: nn.Module) -> tuple[StateDict, list[str]]:
    """torchvision mobilenet_v2 (``features.i.conv.j``) and mobilenet_v3 (``features.i.block.j``)."""
    out, unmapped = {}, []
    blocks = _blocks(model)
    v3 = any(".block." in k for k in sd)
    head = {"classifier.0": "head.hidden", "classifier.3": "head.fc"} if v3 else {"classifier.1": "head.fc"}
    for k, v in sd.items():
        new = None
        m = re.match(r"^features\.(\d+)\.(.+)$", k)
        if m:
            fi, rest = int(m[1]), m[2]
            if fi == 0:
                mm = re.match(r"^([01])\.(.+)$", rest)
                new = f"stem.{_CNA[mm[1]]}.{mm[2]}" if mm else None
            elif fi - 1 < len(blocks):
                name, blk = blocks[fi - 1]
                new = _map_tv_block(rest, blk, v3)
                new = f"{name}.{new}" if new else None
        else:
            new = _map_prefix(k, list(head.items()))
        if new is None:
            unmapped.append(k)
        else:
            out[new] = v
    return out, unmapped


def _map_tv_block(rest: str, blk: nn.Module, v3: bool) -> Optional[str]:
    if isinstance(blk, ConvBlock):  # Conv2dNormActivation: 0 conv, 1 bn
        mm = re.match(r"^([01])\.(.+)$", rest)
        return f"{_CNA[mm[1]]}.{mm[2]}" if mm else None
    if not isinstance(blk, (DepthwiseSeparable, InvertedResidual)):
        return None
    parts = _tv_parts(blk)
    if v3:  # block.j is a Conv2dNormActivation (j.0 conv, j.1 bn) or the SE (fc1/fc2)
        mm = re.match(r"^block\.(\d+)\.(.+)$", rest)
        if not mm or int(mm[1]) >= len(parts):
            return None
        part, tail = parts[int(mm[1])], mm[2]
        if part == "se":
            return f"se.{tail}" if tail.split(".")[0] in ("fc1", "fc2") else None
        m2 = re.match(r"^([01])\.(.+)$", tail)
        return f"{part}.{_CNA[m2[1]]}.{m2[2]}" if m2 else None
    # v2: conv.j for j < len(parts) - 1 are Conv2dNormActivation; the projection is split
    # into a bare Conv2d (conv.{n-1}) and a BatchNorm (conv.{n}).
    mm = re.match(r"^conv\.(\d+)\.(.+)$", rest)
    if not mm:
        return None
    j, tail, n = int(mm[1]), mm[2], len(parts) - 1
    if j < n:
        m2 = re.match(r"^([01])\.(.+)$", tail)
        return f"{parts[j]}.{_CNA[m2[1]]}.{m2[2]}" if m2 else None
    if j == n:
        return f"{parts[n]}.conv.{tail}"
    if j == n + 1:
        return f"{parts[n]}.bn.{tail}"
    return None


# --- official Mobile-Former (AAboys/MobileFormer, mobile_former.py + dna_blocks.py) ----------
# Mobile->Former (`Local2Global`): q, the dynamic gate `alpha` (Linear + h-sigmoid), proj, norm.
_MF_TO_FORMER = [("local_global.q", "to_former.q"), ("local_global.alpha.0", "to_former.gate"),
                 ("local_global.proj", "to_former.proj"), ("local_global.layer_norm", "to_former.norm")]
# Former (`GlobalBlock`) and Mobile<-Former (`Global2Local`: its `proj` is the value projection).
_MF_BRIDGES = _MF_TO_FORMER + [
    ("global_block.q", "former.q"), ("global_block.channel_mlp", "former.proj"),
    ("global_block.layer_norm", "former.norm1"), ("global_block.ffn.0", "former.fc1"),
    ("global_block.ffn.2", "former.fc2"), ("global_block.ffn_norm", "former.norm2"),
    ("global_local.k", "to_mobile.k"), ("global_local.proj", "to_mobile.v")]
# Mobile sub-blocks: `DnaBlock` (stride 1) and `DnaBlock3` (stride 2); `hyperN` is the MLP of
# the dynamic ReLU after `convN`.
_MF_MOBILE: dict[type, list[tuple[str, str]]] = {
    MobileBottleneck: [("conv1.0", "expand.conv"), ("conv1.1", "expand.bn"),
                       ("hyper1.hyper.0", "act1.fc1"), ("hyper1.hyper.2", "act1.fc2"),
                       ("conv2.0", "dw.conv"), ("conv2.1", "dw.bn"),
                       ("hyper2.hyper.0", "act2.fc1"), ("hyper2.hyper.2", "act2.fc2"),
                       ("conv3.0", "project.conv"), ("conv3.1", "project.bn")],
    MobileDownsample: [("conv1.0", "dw1.conv"), ("conv1.1", "dw1.bn"),
                       ("hyper1.hyper.0", "act1.fc1"), ("hyper1.hyper.2", "act1.fc2"),
                       ("conv2.0", "pw1.conv"), ("conv2.1", "pw1.bn"),
                       ("conv3.0", "dw2.conv"), ("conv3.1", "dw2.bn"),
                       ("hyper3.hyper.0", "act2.fc1"), ("hyper3.hyper.2", "act2.fc2"),
                       ("conv4.0", "pw2.conv"), ("conv4.1", "pw2.bn")],
}
# The token-free first block (`DnaBlock3` with e2 = 0): a Sequential dw, BN, ReLU6, shuffle, pw, BN.
_MF_LITE = [("conv.0", "dw.conv"), ("conv.1", "dw.bn"), ("conv.4", "project.conv"), ("conv.5", "project.bn")]
_MF_TOP = [("tokens.weight", "tokens"), ("stem.0", "stem.conv"), ("stem.1", "stem.bn"),
           ("classifier.conv.1", "head.expand.conv"), ("classifier.conv.2", "head.expand.bn"),
           ("classifier.fc.0", "head.hidden"), ("classifier.fc.1", "head.norm"),
           ("classifier.classifier.1", "head.fc")] + _MF_TO_FORMER


def mobileformer_official_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(official key prefix, our key prefix) for every parameter group of a MobileFormer; the
    official ``features.i`` is our i-th block counted across stages."""
    if not hasattr(model, "tokens") or getattr(model, "head", None) is None:
        raise KeyError("not a (complete) MobileFormer model")
    pairs = list(_MF_TOP)
    for i, (name, blk) in enumerate(_blocks(model)):
        if isinstance(blk, LiteBottleneck):
            table = _MF_LITE
        elif isinstance(blk, MobileFormerBlock):
            table = _MF_BRIDGES + [(s, f"mobile.{d}") for s, d in _MF_MOBILE[type(blk.mobile)]]
        else:
            raise KeyError(type(blk).__name__)
        pairs += [(f"features.{i}.{s}", f"{name}.{d}") for s, d in table]
    return pairs


def _rename(sd: StateDict, pairs: list[tuple[str, str]]) -> tuple[StateDict, list[str]]:
    # index the pairs by the key's leading components so each key checks a handful of pairs
    by_head: dict[str, list[tuple[str, str]]] = {}
    for src, dst in pairs:
        by_head.setdefault(".".join(src.split(".")[:2]), []).append((src, dst))
    out, unmapped = {}, []
    for k, v in sd.items():
        new = None
        for head in (".".join(k.split(".")[:2]), k.split(".")[0]):
            new = _map_prefix(k, by_head.get(head, []))
            if new is not None:
                break
        if new is None:
            unmapped.append(k)
        else:
            out[new] = v
    return out, unmapped


def _map_mobileformer_official(sd: StateDict, model: nn.Module) -> tuple[StateDict, list[str]]:
    return _rename(sd, mobileformer_official_pairs(model))


def export_mobileformer_official(model: nn.Module) -> StateDict:
    """``model``'s state dict in the official Mobile-Former key layout (AAboys/MobileFormer),
    e.g. to run it with the official code; :func:`mobilenets.load_weights` reads it back.

    Raises:
        KeyError: ``model`` is not a complete MobileFormer (e.g. a feature extractor).
    """
    inverse = [(d, s) for s, d in mobileformer_official_pairs(model)]
    out, unmapped = _rename(model.state_dict(), inverse)
    if unmapped:  # pragma: no cover - every key of our model has a pair
        raise KeyError(f"keys without an official name: {unmapped[:5]}")
    return out


def _is_mobileformer_official(keys: set[str]) -> bool:
    return ("tokens.weight" in keys and any(k.startswith("features.") for k in keys)
            and any(k.startswith("local_global.") for k in keys))


_FOREIGN_ROOTS = ("features.", "blocks.", "conv_stem.", "local_global.", "classifier.")


def _is_ours(keys: set[str]) -> bool:
    # Our roots (stem / stages / head, plus tokens and to_former for Mobile-Former) never start
    # with another layout's roots; excluding those keeps every detector exclusive.
    return (any(k.startswith("stem.") for k in keys) and any(k.startswith(("stages.", "head.")) for k in keys)
            and not any(k.startswith(_FOREIGN_ROOTS) for k in keys))


class Layout(NamedTuple):
    """How to recognise and read one checkpoint key layout (a tuple, so it also unpacks)."""

    #: True when a state dict's key set is in this layout (the detectors exclude each other).
    detect: Callable[[set[str]], bool]
    #: ``(state_dict, model) -> (our state dict, unmapped keys)``; None: already our names.
    mapper: Optional[Callable]
    #: our family name -> the BatchNorm ``(eps, momentum)`` the checkpoint was trained with
    #: (``(None, None)``: keep the model's; a spec with ``fixed_norm``, the TF ports, always
    #: keeps its own, see :func:`mobilenets.load_weights`).
    bn_settings: Callable[[str], tuple]


LAYOUTS: dict[str, Layout] = {
    "mobilenets": Layout(_is_ours, None, lambda fam: (None, None)),
    # MobileNetV5's stem is a ConvNormAct (conv_stem.conv / conv_stem.bn), the others' a bare conv
    "timm": Layout(lambda ks: ("conv_stem.weight" in ks or "conv_stem.conv.weight" in ks)
                   and any(k.startswith("blocks.") for k in ks),
                   _map_timm, lambda fam: (1e-5, 0.1)),
    # Gemma 3n's vision tower (MobileNetV5, RMSNorm: no BatchNorm settings to carry)
    "gemma3n": Layout(lambda ks: GEMMA3N_VISION_PREFIX + "conv_stem.conv.weight" in ks, _map_gemma3n,
                      lambda fam: (None, None)),
    "torchvision": Layout(lambda ks: "features.0.0.weight" in ks and any(k.startswith("features.1.") for k in ks),
                          _map_torchvision,
                          lambda fam: (1e-3, 0.01) if fam == "mobilenetv3" else (1e-5, 0.1)),
    # The official Mobile-Former trains with PyTorch's default BatchNorm settings.
    "mobileformer_official": Layout(_is_mobileformer_official, _map_mobileformer_official,
                                    lambda fam: (1e-5, 0.1)),
}


def detect_layout(keys) -> str:
    """Name the layout of a state dict from its keys: ``"unknown"`` if none fits,
    ``"ambiguous"`` if several do (the detectors are written to exclude each other)."""
    ks = set(keys)
    hits = [name for name, layout in LAYOUTS.items() if layout.detect(ks)]
    if len(hits) > 1:
        return "ambiguous"
    return hits[0] if hits else "unknown"


def adapt_shape(src: torch.Tensor, dst_shape: torch.Size) -> torch.Tensor:
    """Reshape a 1x1 conv weight ``(o, i, 1, 1)`` to a Linear ``(o, i)`` and back; else as is."""
    if src.shape != dst_shape and src.numel() == int(torch.Size(dst_shape).numel()):
        squeeze = lambda s: tuple(d for d in s if d != 1)  # noqa: E731
        if squeeze(src.shape) == squeeze(dst_shape) and src.ndim in (2, 4) and len(dst_shape) in (2, 4):
            return src.reshape(dst_shape)
    return src
