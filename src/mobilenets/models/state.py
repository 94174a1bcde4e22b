"""The types a backbone's stages pass along and return, and the input check (used by
:mod:`.base` and :mod:`.intermediates`)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

import torch

MIN_INPUT_SIZE = 32


class MapAndTokens(NamedTuple):
    """A feature map with the global tokens that travel beside it (Mobile-Former).

    A plain tuple ``(map, tokens)``: it unpacks, survives ``.clone()`` / ``.to()`` of its parts
    and goes through ``torch.export`` / ``torch.compile``. ``shape`` is the map's (so code that
    reads the feature-map shape works for every family).

    Attributes:
        map: ``(N, C, H, W)`` feature map.
        tokens: ``(N, M, d)`` tokens.
    """

    map: torch.Tensor
    tokens: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        """The map's shape."""
        return self.map.shape


class StageOutput(NamedTuple):
    """The output of the stem or of one stage.

    Attributes:
        name: ``"stem"`` or ``"stages.<i>"`` (the module path).
        map: the ``(N, C, H, W)`` feature map.
        tokens: the ``(N, M, d)`` tokens after that stage (``None`` for families without tokens).
    """

    name: str
    map: torch.Tensor
    tokens: Optional[torch.Tensor] = None


class Step(NamedTuple):
    """One point of :meth:`~mobilenets.models.base.Backbone.walk`.

    Attributes:
        position: 0 the stem; ``i`` stage (or block) ``i - 1``.
        state: what the backbone passes on after it (a map, or :class:`MapAndTokens`).
        pre_stride: the block's expanded map before its stride, when the walk was asked for
            it at this position (else ``None``).
    """

    position: int
    state: Any
    pre_stride: Optional[torch.Tensor] = None


#: What a stage takes and returns: a map (MobileNet V1-V4) or a map with its tokens (Mobile-Former).
State = Union[torch.Tensor, MapAndTokens]


def split_state(state: Any) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(map, tokens)`` of a stage state (a map alone has ``tokens = None``)."""
    if isinstance(state, MapAndTokens):
        return state.map, state.tokens
    return state, None


def check_input(x: torch.Tensor, in_chans: int, min_size: int = MIN_INPUT_SIZE,
                dtype: Optional[torch.dtype] = None) -> None:
    """Raise ``ValueError`` naming the expected and given shape for a bad input batch, and
    ``TypeError`` for a non-tensor or a dtype the model cannot take.

    Args:
        x: the input batch. in_chans: expected channels. min_size: smallest height / width.
        dtype: the model's parameter dtype: a floating input of another dtype is refused with
            the fix (convert the input or the model), except under autocast, which casts itself.
            Integer images are always refused (they need scaling, not only a cast).

    Under ``torch.fx`` symbolic tracing it is a leaf (``torch.fx.wrap`` in :mod:`.base`, where
    ``forward_features`` calls it): one call in the graph, checking the real input when the
    traced module runs.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of shape (N, {in_chans}, H, W), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != in_chans or x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(
            f"expected input of shape (N, {in_chans}, H, W) with H, W >= {min_size}, "
            f"got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point image batch{f' of dtype {dtype}' if dtype else ''}, "
                        f"got {x.dtype}: convert and scale it first, e.g. x.float() / 255, then normalize")
    if dtype is not None and x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"expected an input of dtype {dtype} (the model's parameters), got {x.dtype}: "
                        f"pass x.to({dtype}), or convert the model with model.to({x.dtype})")


