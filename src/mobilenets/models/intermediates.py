"""timm's intermediate-feature API (``forward_intermediates``, ``prune_intermediate_layers``)
and the ``feature_location="expansion"`` taps, for every :class:`~mobilenets.models.base.Backbone`.

Index space: the feature levels of ``model.feature_info`` (one per resolution; the stem is
level 0 when it is the stride-2 level), the same as timm's for the models timm has. An
``int`` ``n`` takes the last ``n`` levels; a sequence takes those levels (negative ones count
from the end). The maps come back in execution order, each once: duplicates collapse and an
unsorted sequence comes back sorted, as timm's loops do. The returned index list (of
``prune_intermediate_layers``) is the resolved list as given, duplicates and order kept.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
import torch.nn as nn

from .state import split_state

Indices = Optional[Union[int, Sequence[int]]]
LOCATIONS = ("", "bottleneck", "expansion")


def take_indices(num_levels: int, indices: Indices) -> tuple[list[int], int]:
    """Resolve ``indices`` against ``num_levels`` levels: ``(absolute indices, deepest)``.

    Args:
        num_levels: how many levels there are.
        indices: ``None`` (all), an ``int`` n (the last n) or a sequence (negative: from the end).

    Raises:
        ValueError: an index out of range, or an empty / non-integer selection.
    """
    if indices is None:
        indices = num_levels
    if isinstance(indices, int):
        if not 0 < indices <= num_levels:
            raise ValueError(f"last-n indices must be in 1..{num_levels} for this model "
                             f"({num_levels} feature levels), got {indices}")
        taken = list(range(num_levels - indices, num_levels))
    else:
        taken = []
        for i in indices:
            if not isinstance(i, int) or not -num_levels <= i < num_levels:
                raise ValueError(f"feature indices must be integers in [{-num_levels}, {num_levels - 1}] "
                                 f"({num_levels} feature levels), got {list(indices)}")
            taken.append(i % num_levels)
        if not taken:
            raise ValueError("expected at least one feature index, got an empty sequence")
    return taken, max(taken)


class IntermediatesMixin:
    """``forward_intermediates`` / ``prune_intermediate_layers`` / expansion taps over the
    backbone's stage protocol (``_begin``, ``_run_stage``, ``_finish_steps`` and its
    ``_neck_positions``, ``drop_head``)."""

    def forward_intermediates(self, x: torch.Tensor, indices: Indices = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False, extra_blocks: bool = False) -> Any:
        """Feature maps at the selected feature levels, with timm's semantics.

        Args:
            x: ``(N, in_chans, H, W)`` input.
            indices: ``None`` (every level), ``int`` n (the last n) or a sequence of levels.
            norm: accepted for timm compatibility (these models have no final norm to apply).
            stop_early: run only the stages up to the deepest selected level.
            output_fmt: ``"NCHW"`` (the only layout).
            intermediates_only: return the list of maps only.
            extra_blocks: index every block instead of the feature levels (0: the stem, ``i``:
                block ``i - 1`` of :meth:`blocks`), as timm's option.

        Returns:
            ``(final, maps)``: ``final`` what :meth:`forward_features` returns (after a
            ``stop_early`` that stopped short: the state at the deepest selected level), or
            ``maps`` alone with ``intermediates_only``.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        if extra_blocks:
            taken, deepest = take_indices(len(self.blocks()) + 1, indices)
            wanted = set(taken)
            ends = {sum(len(s) for s in self.stages[:p]): p for p in self._neck_positions()}
            steps = self.walk(x, until=deepest if stop_early else None, blocks=True, keep=wanted | set(ends))
            end = len(self.blocks())
            # the neck reads stage outputs: the same states at their block positions
            neck = [type(s)(ends[s.position], s.state) for s in steps if s.position in ends]
        else:
            taken, deepest = take_indices(len(self.feature_info), indices)
            positions = self._level_positions()
            wanted = {positions[i] for i in taken}
            until = positions[deepest] if stop_early else None
            steps = self.walk(x, until=until, keep=wanted | set(self._neck_positions()))
            end = len(self.stages)
            neck = steps
        maps = [split_state(s.state)[0] for s in steps if s.position in wanted]
        if intermediates_only:
            return maps
        state = steps[-1].state
        final = self._finish_steps([*neck, steps[-1]]) if steps[-1].position == end else state
        return final, maps

    def prune_intermediate_layers(self, indices: Indices = 1, prune_norm: bool = False,
                                  prune_head: bool = True, extra_blocks: bool = False) -> list[int]:
        """Drop what the selected levels do not need, as timm: the stages after the deepest one
        and, with ``prune_head`` or when stages go, the head, replaced by a plain one
        (:meth:`~mobilenets.models.base.Backbone.plain_head`: ``forward`` returns the final
        map; ``reset_classifier(n, "avg")`` adds a classifier at its width).

        Args:
            indices: the levels to keep (see :meth:`forward_intermediates`).
            prune_norm: accepted for timm compatibility (no final norm here).
            prune_head: remove the classifier.
            extra_blocks: ``indices`` index every block (0: the stem), not the feature levels.

        Returns:
            The resolved indices (as timm: order and duplicates as given).
        """
        if extra_blocks:
            blocks = self.blocks()
            taken, deepest = take_indices(len(blocks) + 1, indices)
            prune_end = deepest < len(blocks)
            if prune_end:
                self._keep_blocks(deepest)
                self.num_features = self.layer_shapes()[deepest][0] if deepest else self._stem_chs()
        else:
            taken, deepest = take_indices(len(self.feature_info), indices)
            keep = self._level_positions()[deepest]  # stem + stages[:keep]
            prune_end = keep < len(self.stages) and (prune_head or deepest < len(self.feature_info) - 1)
            if prune_end:
                self.stages = self.stages[:keep]
                self.num_features = self.feature_info[deepest]["num_chs"]
        if prune_end or prune_head:
            self.plain_head()
        return taken

    def _keep_blocks(self, n: int) -> None:
        """Keep the first ``n`` blocks (over the stages; 0: the stem alone)."""
        stages, left = [], n
        for stage in self.stages:
            if left <= 0:
                break
            stages.append(stage if len(stage) <= left else stage[:left])
            left -= len(stage)
        self.stages = nn.Sequential(*stages)

    def _stem_chs(self) -> int:
        return self.layer_shapes()[0][0]

    def expansion_info(self) -> list[dict]:
        """``feature_info`` for ``feature_location="expansion"``: per level, the expanded map
        of the level's last block (the input of its projection conv, timm's tap; the block
        output for blocks without one), with ``module`` the tapped module's path and
        ``hook_type`` ``"forward_pre"`` (its input) or ``"forward"`` (its output)."""
        out = []
        for f in self.feature_info:
            info = dict(f, hook_type="forward")
            if f["stage"] >= 0:
                last = len(self.stages[f["stage"]]) - 1
                tap = getattr(self.stages[f["stage"]][last], "expansion_tap", None)
                tap = tap() if tap is not None else None
                path = f"stages.{f['stage']}.{last}"
                if tap is not None:
                    rel, hook, chs = tap
                    info.update(module=".".join(filter(None, [path, rel])), hook_type=hook, num_chs=chs)
                else:
                    info["module"] = path
            out.append(info)
        return out


def capture(model: nn.Module, taps: Sequence[dict], run) -> list[torch.Tensor]:
    """Run ``run()`` with temporary hooks on ``taps`` (``expansion_info`` dicts); the tapped
    tensors in tap order. Hooks live only for the call (deep copies and exports stay clean)."""
    got: dict[int, torch.Tensor] = {}
    handles = []
    for i, t in enumerate(taps):
        mod = model.get_submodule(t["module"])
        if t["hook_type"] == "forward_pre":
            handles.append(mod.register_forward_pre_hook(lambda m, a, i=i: got.__setitem__(i, a[0])))
        else:
            handles.append(mod.register_forward_hook(lambda m, a, o, i=i: got.__setitem__(i, o)))
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return [got[i] for i in range(len(taps))]
