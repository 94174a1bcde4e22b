"""The backbone contract every model family shares (the timm-compatible model contract: forward / forward_features / forward_head, feature_info, reset_classifier), held once.

A :class:`Backbone` is a stem, a sequence of stages and a head. What a stage carries from one
to the next (its *state*) depends on the family: a feature map for MobileNet V1-V4, a
:class:`MapAndTokens` pair for Mobile-Former. Subclasses say how the state starts
(:meth:`Backbone._begin`), how a stage runs on it (:meth:`Backbone._run_stage`), what
``forward_features`` returns (:meth:`Backbone._finish`) and how the head reads it
(:meth:`Backbone.forward_head`); everything else (forward, stage iteration, feature levels,
timm's intermediate-feature API, pruning, fuse, BatchNorm settings, initialisation, input
checks) lives here.

Protocol for consumers (detection / segmentation heads, feature extractors):

* ``walk(x, until=, blocks=, keep=, pre_stride=)``: the one run of the backbone, stage by
  stage or block by block (a :class:`Step` per position: the state after it, and a block's
  pre-stride map on request); everything below is built on it. ``layer_shapes()``: the
  channels and reduction of every block position, without running anything.
* ``forward_features(x)``: the final backbone output (a tensor, or :class:`MapAndTokens`);
  ``forward_head(forward_features(x))`` is ``forward(x)``.
* ``stage_outputs(x)``: one :class:`StageOutput` ``(name, map, tokens)`` for the stem and each
  stage (``tokens`` is ``None`` for families without tokens).
* ``feature_info``, ``forward_intermediates(...)``, ``prune_intermediate_layers(...)``: the
  feature levels (one per resolution) with timm's semantics (see :mod:`.intermediates`).
"""


from typing import Any, Collection, Optional, Sequence

import torch
import torch.nn as nn

from ..layers.bn_stats import set_bn
from .fuse import fuse as _fuse
from .intermediates import IntermediatesMixin
from .state import MIN_INPUT_SIZE, MapAndTokens, StageOutput, State, Step, check_input, split_state

__all__ = ["MIN_INPUT_SIZE", "Backbone", "MapAndTokens", "State", "StageOutput", "check_input",
           "check_options", "default_init", "feature_levels", "split_state"]

# FX graph-mode quantization traces the models (benchmarks/bench_int8.py): the input check is
# a leaf call in the traced graph instead of Python branching on a traced shape.
torch.fx.wrap("check_input")


def check_options(width_mult: float, drop_path_rate: float, in_chans: int) -> None:
    """The constructor options every family shares; ``ValueError`` naming the bad value."""
    if width_mult <= 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans}")


def feature_levels(points: list[dict]) -> list[dict]:
    """One feature level per resolution: the last point at each reduction."""
    last_at = {p["reduction"]: p for p in points}
    return [dict(p) for p in points if last_at[p["reduction"]] is p]


def default_init(module: nn.Module) -> None:
    """The library's default initialisation of a subtree (He fan-out convs, N(0, 0.01)
    linears, unit / zero norms). A submodule with an ``init_weights()`` method initialises
    itself (and its children) instead."""
    for child in module.children():
        if callable(getattr(child, "init_weights", None)):
            child.init_weights()
            continue
        if isinstance(child, nn.Conv2d):
            nn.init.kaiming_normal_(child.weight, mode="fan_out")
            if child.bias is not None:
                nn.init.zeros_(child.bias)
        elif isinstance(child, (nn.BatchNorm2d, nn.BatchNorm1d, nn.LayerNorm)):
            nn.init.ones_(child.weight)
            nn.init.zeros_(child.bias)
        elif isinstance(child, nn.Linear):
            nn.init.normal_(child.weight, 0, 0.01)
            if child.bias is not None:
                nn.init.zeros_(child.bias)
        default_init(child)


class Backbone(IntermediatesMixin, nn.Module):
    """Base of every model: stem -> stages -> head.

    Subclasses set ``stem``, ``stages`` (an ``nn.Sequential``), ``head``, ``in_chans``,
    ``num_classes``, ``num_features``, ``head_hidden_size`` and ``feature_info`` (dicts with
    ``module``, ``num_chs``, ``reduction``, ``stage``: -1 for the stem, else the stage index),
    and implement :meth:`forward_head`; families whose stages carry more than a map override
    :meth:`_begin`, :meth:`_run_stage` and :meth:`_finish`.
    """

    # (no class-level annotations: TorchScript reads them as attribute types)
    #: recompute each stage in the backward pass instead of storing its activations
    #: (:meth:`set_grad_checkpointing`)
    grad_checkpointing = False

    # --- what a family provides ---------------------------------------------------------
    def _begin(self, x: torch.Tensor) -> State:
        """The state after the stem."""
        return self.stem(x)

    def _run_stage(self, stage: nn.Module, state: State) -> State:
        """One stage on the state."""
        return stage(state)

    def _run_block(self, block: nn.Module, state: State) -> State:
        """One block of a stage on the state (task heads that tap inside stages run blocks
        one by one; :meth:`_run_stage` runs a whole stage)."""
        return block(state)

    def _finish(self, state: State) -> Any:
        """What :meth:`forward_features` returns, from the state after the last stage."""
        return state

    def _neck_positions(self) -> tuple[int, ...]:
        """Walk positions (0 the stem, ``i`` stage ``i - 1``) whose states the features read
        besides the last one: a multi-scale neck's inputs (MobileNetV5's fusion adapter). None
        by default."""
        return ()

    def _finish_steps(self, steps: Sequence[Step]) -> Any:
        """What :meth:`forward_features` returns, from a full walk's steps (those of
        :meth:`_neck_positions` among them, and the last): :meth:`_finish` of the last state,
        unless the family has a multi-scale neck."""
        return self._finish(steps[-1].state)

    def drop_head(self) -> None:
        """Remove the classifier (and whatever only it reads)."""
        self.head = None

    def forward_head(self, x: Any, pre_logits: bool = False) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    # --- the contract ---------------------------------------------------------------------
    def walk(self, x: torch.Tensor, until: Optional[int] = None, blocks: bool = False,
             keep: Optional[Collection[int]] = None, pre_stride: Collection[int] = ()) -> list[Step]:
        """Run the backbone from the input: the one walk that :meth:`forward_features`,
        :meth:`stage_outputs`, ``features_only``, :meth:`forward_intermediates` and the task
        models' taps all take.

        Positions: 0 is the stem; ``i`` is stage ``i - 1`` (or, with ``blocks``, block ``i - 1``
        of :meth:`blocks`, torchvision's ``features`` index space).

        Args:
            x: ``(N, in_chans, H, W)`` input.
            until: stop after this position (default: run everything).
            blocks: step block by block instead of stage by stage.
            keep: the positions to return (default: every one); the last position run is
                always returned, so the caller has the final state.
            pre_stride: block positions (``blocks=True``) whose expanded map before the
                block's stride to return too (blocks that :meth:`expands_before_stride`;
                SSDLite's stride-16 feature).

        Returns:
            One :class:`Step` ``(position, state, pre_stride map or None)`` per kept position.
        """
        check_input(x, self.in_chans, dtype=self.input_dtype())
        units = [b for _, b in self.blocks()] if blocks else list(self.stages)
        if until is not None:
            units = units[:until]
        state = self._begin(x)
        steps = [Step(0, state)] if keep is None or 0 in keep or not units else []
        for i, unit in enumerate(units, start=1):
            expanded = None
            if i in pre_stride:
                if not blocks:
                    raise ValueError("pre_stride positions are block positions: pass blocks=True")
                fmap, tokens = split_state(state)
                expanded, y = unit.forward_pre_stride(fmap)
                state = y if tokens is None else type(state)(y, tokens)
            elif self.grad_checkpointing and torch.is_grad_enabled():
                run = self._run_block if blocks else self._run_stage
                state = torch.utils.checkpoint.checkpoint(run, unit, state, use_reentrant=False)
            else:
                state = self._run_block(unit, state) if blocks else self._run_stage(unit, state)
            if keep is None or i in keep or i == len(units):
                steps.append(Step(i, state, expanded))
        return steps

    def layer_shapes(self) -> list[tuple[int, int]]:
        """``(channels, reduction)`` of the map at every block position of :meth:`walk`
        (0: the stem; ``i``: block ``i - 1``), from the blocks' ``out_chs`` and ``stride``:
        no forward pass (a dilated block has stride 1)."""
        stem = [f for f in self.feature_info if f["stage"] == -1]
        chs, red = (stem[0]["num_chs"], stem[0]["reduction"]) if stem else (None, 2)
        if chs is None:
            chs = self.stem.conv.out_channels
        out = [(chs, red)]
        for _, blk in self.blocks():
            red *= blk.stride
            out.append((blk.out_chs, red))
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone output before pooling: ``(N, num_features, H/32, W/32)`` (with its tokens,
        as :class:`MapAndTokens`, for families that have them).

        Args:
            x: ``(N, in_chans, H, W)`` input, H, W >= 32.
        """
        if torch.jit.is_scripting():  # TorchScript: the stages in order (no Python-side walk)
            return self._scripted_features(x)
        return self._walk_features(x)

    def _scripted_features(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward_features` under TorchScript: a conv family's map through stem and
        stages (a family with a neck overrides it)."""
        return self.stages(self.stem(x))

    @torch.jit.unused
    def _walk_features(self, x: torch.Tensor) -> Any:
        return self._finish_steps(self.walk(x, keep=self._neck_positions()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` (the head's hidden vector when ``num_classes == 0``)."""
        return self.forward_head(self.forward_features(x))

    def stage_outputs(self, x: torch.Tensor, depth: Optional[int] = None) -> list[StageOutput]:
        """The stem's and each stage's output for one input batch.

        Args:
            x: ``(N, in_chans, H, W)`` input.
            depth: run only the first ``depth`` stages (default: all).

        Returns:
            ``[StageOutput("stem", map, tokens), StageOutput("stages.0", ...), ...]``.
        """
        return [StageOutput("stem" if s.position == 0 else f"stages.{s.position - 1}", *split_state(s.state))
                for s in self.walk(x, until=depth)]

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """Every block in execution order, flattened over the stages: ``(path, module)``
        (``path`` is ``"stages.<i>.<j>"``). With the stem first, this is torchvision's
        ``features`` index space for MobileNetV2/V3."""
        return [(f"stages.{si}.{bi}", blk) for si, stage in enumerate(self.stages)
                for bi, blk in enumerate(stage)]

    def input_dtype(self) -> torch.dtype:
        """The dtype inputs must have: the model's (first floating) parameter dtype."""
        return next((p.dtype for p in self.parameters() if p.is_floating_point()), torch.float32)

    def feature_modules(self) -> list[nn.Module]:
        """The modules the feature levels index into: stem, then each stage."""
        return [self.stem, *self.stages]

    def _level_positions(self) -> list[int]:
        # feature level -> index into stage_outputs() (0 = stem, i + 1 = stage i)
        return [f["stage"] + 1 for f in self.feature_info]

    def _feature_maps(self, x: torch.Tensor, levels: Sequence[int]) -> list[torch.Tensor]:
        """Maps at the given feature levels (indices into ``feature_info``), shallow to deep;
        runs only the stages up to the deepest requested level."""
        take = sorted(self._level_positions()[i] for i in levels)
        return [split_state(s.state)[0] for s in self.walk(x, until=take[-1], keep=take)]

    def prune_for_features(self, max_index: int) -> None:
        """Drop the classifier and the stages deeper than feature level ``max_index``.

        Args:
            max_index: index into ``feature_info`` of the deepest level still needed.
        """
        self.stages = self.stages[: self._level_positions()[max_index]]
        self.drop_head()

    def plain_head(self) -> None:
        """Replace the head (and whatever only it reads) by a plain one on the final map:
        no pooling, no classifier (``forward`` returns the ``num_features`` map, as timm's
        pruned models do); :meth:`reset_classifier` then adds pooling and a classifier at
        that width."""
        from ..layers.head import ClassifierHead

        self.drop_head()
        ref = next((p for p in self.parameters() if p.is_floating_point()), None)
        head = ClassifierHead(self.num_features, 0, pool_type="")
        self.head = head.to(ref.device, ref.dtype) if ref is not None else head
        self.head.train(self.training)
        self.num_classes, self.head_hidden_size = 0, self.num_features

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the final Linear with a fresh one, on the model's device and dtype and in
        its train / eval mode.

        Args:
            num_classes: outputs of the new classifier (0: none, ``forward`` returns the
                ``head_hidden_size`` vector).
            global_pool: the pooling (timm's types: ``"avg"``, ``"max"``, ``"avgmax"``,
                ``"catavgmax"``, ``""``: none); ``None`` keeps the current one. A pooling that
                changes the width a hidden head layer was built for raises
                :class:`~mobilenets.layers.pool.UnsupportedPoolError` (timm asserts).
        """
        if self.head is None:  # removed for feature extraction: a plain head at the final width
            self.plain_head()
        self.head.reset(num_classes, global_pool)
        ref = next((p for p in self.parameters() if p.is_floating_point()), None)
        if ref is not None:
            self.head.to(ref.device, ref.dtype)
        self.num_classes, self.head_hidden_size = num_classes, self.head.hidden_size

    def get_classifier(self) -> nn.Module:
        """The final Linear (``nn.Identity`` without classifier)."""
        return self.head.fc if self.head is not None else nn.Identity()

    # --- timm's training hooks ------------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Gradient checkpointing: each stage's activations are recomputed in the backward
        pass instead of stored (less memory, about one more forward of compute); the outputs
        and gradients are the same."""
        self.grad_checkpointing = bool(enable)

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter groups (layer-wise learning-rate decay, ``timm.optim``): the stem,
        then one group per stage (``coarse``) or per block; the head falls in the last."""
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)")

    def no_weight_decay(self) -> set:
        """Parameter names to train without weight decay besides biases and norms (which timm's
        optimizer factory already exempts): none for the conv families."""
        return set()

    def fuse(self) -> "Backbone":
        """Fold BatchNorms and drop inference no-ops in place (see :func:`mobilenets.deploy.fuse`)."""
        return _fuse(self, inplace=True)

    def set_bn(self, eps: Optional[float] = None, momentum: Optional[float] = None) -> None:
        """Set eps / momentum of every BatchNorm (checkpoints from other sources expect theirs).

        Args:
            eps: new epsilon (``None``: keep). momentum: new momentum (``None``: keep).
        """
        set_bn(self, eps, momentum)

    def _init_weights(self) -> None:
        default_init(self)
