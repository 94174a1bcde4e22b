"""Our backbones as torchvision detection backbones: where each detector reads them (cut
points), which layers train, and BatchNorm frozen as torchvision freezes it.

Every family is read through the one backbone protocol (:class:`mobilenets.models.Backbone`):
the stem, then :meth:`~mobilenets.models.Backbone.blocks` one by one with ``_run_block`` (so
Mobile-Former's tokens travel along), and, for SSDLite's stride-16 map, a block's
``forward_expansion``. No family-specific branches.

Units (torchvision's ``stage_indices`` for MobileNetV2/V3, defined for every family): the stem,
each block that downsamples, and the last block. ``trainable_backbone_layers=k`` trains the
last ``k`` units and everything after them, as torchvision's ``_mobilenet_extractor`` does.

Cut points (README "Detection"):

* SSDLite: the expansion output of the block that downsamples to stride 32 (torchvision's "C4
  expansion": the 1x1 expansion runs at stride 16, before that block's strided depthwise) when
  that block expands before its stride (V2/V3 inverted residuals, V4 UIBs with a middle
  depthwise); otherwise (V1, fused or start-depthwise V4 blocks, Mobile-Former) the stride-16
  map that enters that block. Then the backbone's last map (stride 32).
* Faster R-CNN FPN: the last two units (the block that reaches stride 32, and the last block),
  as torchvision for MobileNetV3.
* RetinaNet FPN: the last map at strides 8, 16 and 32 (the ResNet convention, C3-C5).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence

import torch
import torch.nn as nn

from ...models.base import Backbone
from ...models.state import split_state


def units(backbone: Backbone) -> list[int]:
    """torchvision's ``stage_indices`` in our flattened index space (0 = stem, i = block i-1):
    the stem, every downsampling block, the last block."""
    blocks = backbone.blocks()
    strided = [i + 1 for i, (_, b) in enumerate(blocks) if _stride(b) > 1]
    return sorted({0, *strided, len(blocks)})


def _stride(block: nn.Module) -> int:
    s = getattr(block, "stride", 1)
    if isinstance(s, tuple):
        s = s[0]
    mobile = getattr(block, "mobile", None)  # Mobile-Former blocks: the stride of their Mobile part
    if mobile is not None:
        s = max(s, getattr(mobile, "stride", 1))
    return int(s)


def freeze_layers(backbone: Backbone, trainable_layers: int) -> None:
    """Freeze (``requires_grad=False``) every parameter before the last ``trainable_layers``
    units (0: the whole backbone), as torchvision's ``_mobilenet_extractor``.

    Raises:
        ValueError: ``trainable_layers`` outside ``0..len(units)``.
    """
    idx = units(backbone)
    if not 0 <= trainable_layers <= len(idx):
        raise ValueError(f"trainable_backbone_layers must be in 0..{len(idx)} for this backbone "
                         f"({len(idx)} units: stem, {len(idx) - 2} downsampling blocks, last block), "
                         f"got {trainable_layers}")
    layers = [backbone.stem] + [b for _, b in backbone.blocks()]
    freeze_before = len(layers) if trainable_layers == 0 else idx[len(idx) - trainable_layers]
    for m in layers[:freeze_before]:
        for p in m.parameters():
            p.requires_grad_(False)
    if freeze_before > 0 and isinstance(getattr(backbone, "tokens", None), nn.Parameter):
        backbone.tokens.requires_grad_(False)  # Mobile-Former's token table enters at the stem


def frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` under ``module`` by torchvision's ``FrozenBatchNorm2d`` with
    the same statistics, affine parameters and eps (what torchvision's detectors do to a
    pretrained backbone: the statistics of small detection batches would be worse)."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                frozen.weight.copy_(child.weight)
                frozen.bias.copy_(child.bias)
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            frozen_batchnorm(child)
    return module


class Taps(nn.Module):
    """Runs a backbone and returns the maps at chosen points, as an ``OrderedDict`` named
    ``"0", "1", ...`` (what torchvision's detection necks and heads take), plus the tokens.

    A tap is ``(kind, i)`` in the flattened index space of :func:`units` (0 = the stem, i =
    block i-1): ``("out", i)`` that layer's output map, ``("expansion", i)`` block i-1's
    expansion output (it must :meth:`expands_before_stride`). Only the layers up to the deepest
    tap run; the backbone's classifier and later blocks are removed.

    Args:
        backbone: any registered classification backbone (V1-V4, Mobile-Former).
        taps: the points, shallow to deep.

    Attributes:
        channels: channels of each tapped map.
    """

    def __init__(self, backbone: Backbone, taps: Sequence[tuple[str, int]]):
        super().__init__()
        blocks = backbone.blocks()
        last = max(i for _, i in taps)
        for kind, i in taps:
            if kind == "expansion" and not (i > 0 and blocks[i - 1][1].expands_before_stride()):
                raise ValueError(f"block {i - 1} ({type(blocks[i - 1][1]).__name__}) has no expansion "
                                 f"before its stride to tap")
            if kind not in ("out", "expansion"):
                raise ValueError(f"tap kind must be 'out' or 'expansion', got {kind!r}")
        self.taps = [tuple(t) for t in taps]
        self._at: dict[int, list[tuple[int, str]]] = {}  # layer index -> (output position, kind)
        for n, (kind, i) in enumerate(self.taps):
            self._at.setdefault(i, []).append((n, kind))
        # keep only what runs: the stem and the blocks up to the deepest tap (module paths, and
        # so checkpoint keys, stay those of the classification backbone)
        backbone._drop_head()
        if last == 0:
            backbone.stages = nn.Sequential()
        else:
            si, bi = (int(p) for p in blocks[last - 1][0].split(".")[1:])
            backbone.stages = nn.Sequential(*backbone.stages[:si], backbone.stages[si][: bi + 1])
        self.body = backbone
        self.channels = tap_channels(self)

    def forward_with_tokens(self, x: torch.Tensor) -> tuple[OrderedDict, Optional[torch.Tensor]]:
        """``(maps, tokens)``: the tapped maps and, for Mobile-Former, the global tokens after
        the deepest tapped block (``None`` for the MobileNets); a head may use or ignore them."""
        body, wanted = self.body, self._at
        out: dict[int, torch.Tensor] = {}
        state = body._begin(x)
        for n, kind in wanted.get(0, []):
            out[n] = split_state(state)[0]
        for i, (_, blk) in enumerate(body.blocks(), start=1):
            kinds = wanted.get(i, [])
            if any(k == "expansion" for _, k in kinds):
                fmap, tokens = split_state(state)
                e, y = blk.forward_expansion(fmap)
                state = y if tokens is None else type(state)(y, tokens)
            else:
                e = None
                state = body._run_block(blk, state)
            for n, kind in kinds:
                out[n] = e if kind == "expansion" else split_state(state)[0]
        return OrderedDict((str(n), out[n]) for n in range(len(self.taps))), split_state(state)[1]

    def forward(self, x: torch.Tensor) -> OrderedDict:
        return self.forward_with_tokens(x)[0]


def tap_channels(taps: Taps, size: tuple[int, int] = (320, 320)) -> list[int]:
    """Channels of every tapped map (a dry run on one zero image in eval mode)."""
    was = taps.training
    taps.eval()
    with torch.no_grad():
        maps = taps(torch.zeros(1, taps.body.in_chans, *size))
    taps.train(was)
    return [m.shape[1] for m in maps.values()]


def ssdlite_taps(backbone: Backbone) -> list[tuple[str, int]]:
    """SSDLite's two backbone maps (module docstring): the C4 expansion (or the stride-16 map)
    and the last map."""
    idx = units(backbone)
    if len(idx) < 3:
        raise ValueError("SSDLite needs a backbone that downsamples to stride 32")
    down = idx[-2]  # the block (1-based) that reaches stride 32
    blk = backbone.blocks()[down - 1][1]
    c4 = ("expansion", down) if _expands(blk) else ("out", down - 1)
    return [c4, ("out", idx[-1])]


def _expands(blk: nn.Module) -> bool:
    f = getattr(blk, "expands_before_stride", None)
    return bool(f and f())


def fpn_taps(backbone: Backbone) -> list[tuple[str, int]]:
    """Faster R-CNN's FPN inputs: the last two units (torchvision's MobileNetV3 choice)."""
    idx = units(backbone)
    return [("out", idx[-2]), ("out", idx[-1])]


def stride_taps(backbone: Backbone, reductions: Sequence[int] = (8, 16, 32)) -> list[tuple[str, int]]:
    """The last map at each reduction (RetinaNet's C3-C5), from the stem and blocks' strides.

    Raises:
        ValueError: the backbone has no map at one of the reductions (e.g. a dilated backbone),
            naming the fix.
    """
    red, last_at = 2, {2: 0}
    for i, (_, blk) in enumerate(backbone.blocks(), start=1):
        red *= _stride(blk)
        last_at[red] = i
    missing = [r for r in reductions if r not in last_at]
    if missing:
        raise ValueError(f"this backbone has no feature map at stride(s) {missing} (it reaches "
                         f"{sorted(last_at)}); build it with output_stride=32 (no dilation)")
    return [("out", last_at[r]) for r in reductions]
