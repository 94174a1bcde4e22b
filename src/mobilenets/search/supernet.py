"""The weight-sharing supernet of a :class:`~.space.SearchSpace`: one network holding every
architecture of the space, running one sampled path per step (TuNAS, Bender et al. 2020,
https://arxiv.org/abs/2008.06120; MobileNetV4's UIB supernet, Qin et al. 2024,
https://arxiv.org/abs/2404.10518, Sec. 4).

Layout: the frame's fixed stages (stem, conv / FusedIB stages, the 1x1 conv to 960, the head)
are the library's own blocks; each searched stage is ``max(depths)`` :class:`~.sliced.BlockSlot`
s, each holding one UIB whose pointwise expand / project every op shares (MNv4 Sec. 4: so nearly
all parameters are shared), its two optional depthwise slots (start, middle), and a Mobile MQA
where the stage offers one. Every tensor is sized for the largest width any path gives it.

Decisions this module makes:

- **Slicing, not masking.** A path runs on the leading slice of each shared tensor (filters,
  expansion, and the input channels of every layer whose input width varies: the first block
  after a searched stage, the frame's 1x1 960 conv, the head of a space ending in a searched
  stage). TuNAS masks channels of full-size tensors instead, because TPUs compile for static
  shapes; on a CPU or GPU slicing makes a small path cost only its own MACs, so a search step
  on a cheap path is cheap, and the sliced weights are exactly the standalone model's
  (:meth:`Supernet.extract`).
- **One depthwise kernel per slot, smaller kernels its centre** (Once-for-All's elastic
  kernel, Cai et al. 2020, https://arxiv.org/abs/1908.09791, without its kernel transformation
  matrices). Rather than one weight per kernel size: TuNAS's op warm-up enables all ops at
  once, and with a shared kernel "all ops" is one member of the space's own family (both
  depthwise slots at their largest kernel, :data:`~.controller.ALL`), which trains every
  depthwise weight in one pass instead of summing convolutions no architecture contains; the
  3x3 choice starts from the most-trained taps; the depthwise weights stay a few percent of
  the parameters. The cost: the 3x3 and 5x5 choices are not independent, which a controller
  comparing them must live with (OFA's matrices could be added to decouple them).
- **BatchNorm.** Training normalises with batch statistics on the sliced channels (the
  running ones mix every path); before a path is evaluated, :meth:`Supernet.recalibrate_bn`
  re-estimates its statistics on a few training batches (Once-for-All's and single-path NAS's
  practice, cf. :func:`mobilenets.layers.bn_stats.calibrate_bn_stats`).

Widths honour the frame's ``width_mult`` as :class:`~mobilenets.models.MobileNet` does: each
searched filter choice ``f`` becomes ``make_divisible(f * width_mult)``.
"""

from __future__ import annotations

from functools import partial
from typing import Iterable, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..archs.spec import BlockSpec
from ..layers import ConvNormAct, make_divisible
from ..layers.conv import NormLayer
from ..models.base import default_init
# _scaled: the width rule MobileNet applies to a row (make_divisible(out * width_mult), or "max" / "fixed")
from ..models.mobilenet import MobileNet, _scaled, build_block
from .controller import ALL
from .sliced import BlockSlot, SlicedConvBlock, SlicedHead, SlotPath, copy_sliced
from .space import MQA_OP, SearchSpace

__all__ = ["Supernet"]

Choice = Mapping[str, Union[int, str]]
_BN = nn.modules.batchnorm._BatchNorm


class Supernet(nn.Module):
    """Every architecture of ``space`` in one weight-sharing network; :meth:`set_path` picks
    one, :meth:`forward` runs it, :meth:`extract` copies it out as a standalone
    :class:`~mobilenets.models.MobileNet`.

    The first path is :meth:`full_path` (every op at once, the largest depth, filters and
    expansion). Gradients reach only the weights the current path ran on (the rest get no
    gradient, or zeros in the slices a path did not use); an optimizer with momentum or
    weight decay still moves those, as in every single-path supernet. Under
    ``DistributedDataParallel`` each rank's path leaves parameters unused:
    ``find_unused_parameters=True``. No stochastic depth (drop path) in the supernet.

    Args:
        space: the search space.
        num_classes: classifier outputs (0: pooled features).
        in_chans: input channels.
        drop_rate: dropout before the classifier (default: the frame's).

    Raises:
        ValueError: a frame the supernet cannot slice (anti-aliasing, TF "same" padding, or a
            block after a searched stage that is not ``cn``, ``uir`` or ``mqa``).
    """

    def __init__(self, space: SearchSpace, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: Optional[float] = None) -> None:
        super().__init__()
        if not isinstance(space, SearchSpace):
            raise TypeError(f"Supernet: expected a SearchSpace, got {type(space).__name__}")
        frame = space.frame
        if frame.aa is not None or frame.pad_type:
            raise ValueError(f"Supernet({space.name}): expected a frame without anti-aliasing and with symmetric "
                             f"padding, got aa={frame.aa!r}, pad_type={frame.pad_type!r}")
        self.space, self.num_classes, self.in_chans = space, num_classes, in_chans
        w = self.width_mult = frame.width_mult
        norm = partial(nn.BatchNorm2d, eps=frame.norm_eps, momentum=frame.norm_momentum)
        stem = frame.stem if w < frame.fix_stem_below else make_divisible(frame.stem * w)
        self.stem = ConvNormAct(in_chans, stem, frame.stem_k, 2, norm=norm, act=frame.stem_act or frame.act)
        # widths the next layer's input may have: one for a fixed stage, each filter choice after a searched one
        ins: tuple[int, ...] = (stem,)
        stages = []
        n = len(space.stages)
        for p in range(len(frame.stages) + n):
            i = p - space.insert_at
            blocks = []
            if 0 <= i < n:
                st = space.stages[i]
                outs = tuple(sorted({_scaled(BlockSpec("uir", f), w) for f in st.filters}))
                for j in range(max(st.depths)):
                    src = ins if j == 0 else outs
                    mid = max(make_divisible(c * e) for c in src for e in st.expansions)
                    mqa = (st.mqa.heads, st.mqa.key_dim, st.mqa.kv_stride, 3) if st.mqa and j > 0 else None
                    blocks.append(BlockSlot(max(src), outs[-1], mid, max(a for a, _ in st.ops),
                                            max(k for _, k in st.ops), frame.act, norm, frame.layer_scale, mqa))
                ins = outs
            else:
                for b in frame.stages[p if i < 0 else p - n]:
                    out = _scaled(b, w)
                    blocks.append(build_block(b, ins[0], out, b.stride, 1, frame, norm, 0.0) if len(ins) == 1
                                  else self._varying_input(b, ins, out, norm))
                    ins = (out,)
            stages.append(nn.ModuleList(blocks))
        self.stages = nn.ModuleList(stages)
        self.head = SlicedHead(max(ins), num_classes, frame.head.hidden, frame.head.norm, frame.head.act or frame.act,
                               frame.drop_rate if drop_rate is None else drop_rate, frame.norm_eps,
                               frame.norm_momentum, bias=frame.head.bias)
        default_init(self)
        self.path: dict[str, Union[int, str]] = {}
        self.set_path(self.full_path())

    def _varying_input(self, b: BlockSpec, ins: Sequence[int], out: int, norm: NormLayer) -> nn.Module:
        """A fixed block after a searched stage: built for the widest input, sliced to the actual one."""
        frame = self.space.frame
        if b.kind == "cn":
            return SlicedConvBlock(max(ins), out, b.k, b.stride, norm=norm, act=b.act or frame.act)
        if b.kind not in ("uir", "mqa") or b.query_stride != 1:
            raise ValueError(f"Supernet({self.space.name}): the fixed block {b.to_string()} follows a searched stage, "
                             f"so its input width varies; the supernet slices cn, uir and mqa (query stride 1) "
                             f"blocks there, got {b.kind}{' q2' if b.query_stride != 1 else ''}")
        ls = frame.layer_scale
        if b.kind == "mqa":
            slot = BlockSlot(max(ins), out, 0, 0, 0, frame.act, norm, ls, (b.heads, b.key_dim, b.kv_stride, b.k))
            slot.path = SlotPath(MQA_OP, 1.0, out, 1, b.skip)
        else:
            slot = BlockSlot(max(ins), out, max(make_divisible(c * b.e) for c in ins), b.a, b.k, b.act or frame.act,
                             norm, ls)
            slot.path = SlotPath((b.a, b.k), b.e, out, b.stride, b.stride == 1 and b.skip)
        return slot

    # -- paths ---------------------------------------------------------------------------------
    def full_path(self) -> dict[str, Union[int, str]]:
        """The whole supernet as a path: :data:`~.controller.ALL` for every op decision, the
        largest depth, filters and expansion for the others."""
        return {d.name: ALL if d.name.endswith(".op") else max(range(len(d.choices)), key=d.choices.__getitem__)
                for d in self.space.decisions()}

    def warmup_fallback(self) -> dict[str, Union[int, str]]:
        """The ``fallback`` of :func:`~.schedule.warmup_sample` for TuNAS's op and filter
        warm-up: :data:`~.controller.ALL` for op decisions, the largest filters' index for
        filter decisions."""
        full = self.full_path()
        return {k: v for k, v in full.items() if k.endswith((".op", ".filters"))}

    def set_path(self, choice: Choice) -> None:
        """Make ``choice`` the path :meth:`forward` runs.

        Args:
            choice: a choice of the space (decision name -> index, :meth:`SearchSpace.check_choice`);
                an op decision may be :data:`~.controller.ALL` (the op warm-up: both depthwise
                slots at their largest kernel, plus the MQA where the slot offers one).

        Raises:
            ValueError: the space's error for a missing, unknown or out-of-range decision, or
                ALL given to a decision that is not an op.
        """
        if not isinstance(choice, Mapping):
            raise TypeError(f"set_path: expected a choice dict (decision -> index), got {type(choice).__name__}")
        alls = {k for k, v in choice.items() if isinstance(v, str) and v == ALL}
        bad = sorted(k for k in alls if not k.endswith(".op"))
        if bad:
            raise ValueError(f"{self.space.name}: {ALL!r} (every op at once) is a value of op decisions only, "
                             f"got it for {bad[0]!r}")
        concrete = self.space.canonical({k: 0 if k in alls else v for k, v in choice.items()})
        for i in range(len(self.space.stages)):
            slots = self.stages[self.space.insert_at + i]
            blocks = self.space.stage_blocks(i, concrete)
            for j, slot in enumerate(slots):
                if j >= len(blocks):
                    slot.path = None  # past the chosen depth: not run
                    continue
                b = blocks[j]
                op = ALL if f"s{i}.b{j}.op" in alls else (MQA_OP if b.kind == "mqa" else (b.a, b.k))
                slot.path = SlotPath(op, b.e, _scaled(b, self.width_mult), b.stride, b.stride == 1 and b.skip)
        self.path = {**concrete, **{k: ALL for k in alls}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The current path's logits (or pooled features with ``num_classes=0``)."""
        x = self.stem(x)
        for stage in self.stages:
            for block in stage:
                if not isinstance(block, BlockSlot) or block.path is not None:
                    x = block(x)
        return self.head(x)

    # -- BatchNorm -----------------------------------------------------------------------------
    @torch.no_grad()
    def recalibrate_bn(self, batches: Iterable[Union[torch.Tensor, Sequence[torch.Tensor]]]) -> int:
        """Re-estimate the running statistics of the BatchNorms the current path runs, on its
        channels, as the plain average over ``batches`` (training images, no augmentation
        needed), so the path evaluates as its standalone model would. Other BatchNorms and
        channels keep theirs. Dropout is off meanwhile; the train / eval mode is restored.

        Shared BatchNorms hold statistics mixed over every path trained through them, wrong for
        any one path; Once-for-All (Cai et al., https://arxiv.org/abs/1908.09791) and single-path
        one-shot NAS (Guo et al., https://arxiv.org/abs/1904.00420) recompute them on a few
        training batches before evaluating a sub-network, and so does this.

        Args:
            batches: input tensors, or ``(input, target, ...)`` sequences as a data loader
                yields them.

        Returns:
            the number of batches used.

        Raises:
            ValueError: ``batches`` is empty.
        """
        bns = [m for m in self.modules() if isinstance(m, _BN) and m.track_running_stats]
        saved = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
        was_training, n = self.training, 0
        try:
            self.eval()
            for m in bns:
                # momentum None: PyTorch's cumulative average; the first batch replaces the old statistics
                m.momentum = None
                m.num_batches_tracked.zero_()
                m.train()
            for batch in batches:
                self(batch if isinstance(batch, torch.Tensor) else batch[0])
                n += 1
        finally:
            for m, (momentum, count) in zip(bns, saved):
                m.momentum = momentum
                if int(m.num_batches_tracked) == 0:  # not on the path: as it was
                    m.num_batches_tracked.copy_(count)
            self.train(was_training)
        if n == 0:
            raise ValueError("recalibrate_bn: expected at least one batch of training images, got none")
        return n

    # -- the standalone model ------------------------------------------------------------------
    def extract(self, choice: Mapping[str, int]) -> MobileNet:
        """The architecture of ``choice`` as a standalone :class:`~mobilenets.models.MobileNet`
        (``MobileNet(space.to_spec(choice))``, the model ``create_model(str(spec))`` builds)
        holding this supernet's weights, sliced; in the supernet's train / eval mode. Does not
        change the current path. Recalibrate the path's BatchNorms first
        (:meth:`recalibrate_bn`) for statistics that fit it.

        Raises:
            ValueError: the space's error for a bad choice (:data:`~.controller.ALL` included:
                no standalone model runs every op).
        """
        spec = self.space.to_spec(choice)
        model = MobileNet(spec, num_classes=self.num_classes, in_chans=self.in_chans,
                          drop_rate=self.head.drop.p).to(next(self.parameters()))
        copy_sliced(model.stem, self.stem)
        copy_sliced(model.head, self.head)
        for p, (stage, mine) in enumerate(zip(model.stages, self.stages)):
            for block, b, src in zip(stage, spec.stages[p], mine):
                copy_sliced(block, src.source(b.kind) if isinstance(src, BlockSlot) else src)
        return model.train(self.training)
