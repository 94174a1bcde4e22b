"""Multi-scale feature extraction (``create_model(..., features_only=True)``)."""


from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from .intermediates import LOCATIONS, capture, take_indices

Index = Optional[Union[int, Sequence[int]]]


class FeatureInfo(list):
    """The feature levels a ``features_only`` model returns, with timm's ``FeatureInfo``
    methods: ``channels()``, ``reduction()``, ``module_name()``, ``get(key)``, ``get_dicts()``,
    ``from_other(out_indices)``, and ``out_indices`` / ``info`` (every level of the backbone).

    It is also the list of the SELECTED levels' dicts (iteration, ``len``, ``[i]``: what this
    library's ``feature_info`` always was); timm's object indexes every level there. Its methods
    agree with timm's: ``idx=None`` means the selected levels, an int or a list of ints index
    ``info`` (every level) directly.

    Args:
        info: every level (dicts with ``num_chs``, ``reduction``, ``module``).
        out_indices: the selected levels (indices into ``info``).
    """

    def __init__(self, info: Sequence[dict], out_indices: Sequence[int]):
        self.info = [dict(f, index=i) for i, f in enumerate(info)]
        self.out_indices = tuple(int(i) for i in out_indices)
        super().__init__(self.info[i] for i in self.out_indices)

    def from_other(self, out_indices: Sequence[int]) -> "FeatureInfo":
        """The same levels, another selection."""
        return FeatureInfo(self.info, out_indices)

    def get(self, key: str, idx: Index = None):
        """``key`` of each selected level (``idx=None``), of level ``idx`` (an int, into every
        level), or of each of the levels ``idx`` (a list)."""
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(self, keys: Optional[Sequence[str]] = None, idx: Index = None):
        """The level dicts (only ``keys`` when given), indexed as :meth:`get`."""
        pick = (lambda f: dict(f)) if keys is None else (lambda f: {k: f[k] for k in keys})
        if idx is None:
            return [pick(self.info[i]) for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [pick(self.info[i]) for i in idx]
        return pick(self.info[idx])

    def channels(self, idx: Index = None):
        """Channels of the selected levels (see :meth:`get`)."""
        return self.get("num_chs", idx)

    def reduction(self, idx: Index = None):
        """Strides of the selected levels (see :meth:`get`)."""
        return self.get("reduction", idx)

    def module_name(self, idx: Index = None):
        """Module paths of the selected levels (see :meth:`get`)."""
        return self.get("module", idx)


class FeatureExtractor(nn.Module):
    """Wraps a backbone and returns the feature maps at ``out_indices`` (one per resolution
    level of ``model.feature_info``), as a list, shallow to deep.

    Any :class:`~mobilenets.models.base.Backbone` works: it offers ``feature_info`` (dicts with
    ``module``, ``num_chs``, ``reduction``), ``_feature_maps(x, levels)`` (the maps at those
    levels), ``expansion_info()`` (the taps of ``feature_location="expansion"``) and
    ``prune_for_features(max_index)`` (drop the classifier and everything deeper than that
    level, so unused stages are neither stored nor run).

    Args:
        model: the backbone (pruned in place).
        out_indices: the levels to return (default: all; negative count from the end).
        feature_location: ``""`` / ``"bottleneck"`` (each level's block output) or
            ``"expansion"`` (timm's option: the expanded map inside each level's last block,
            the input of its projection conv; the high-channel maps SSD-style heads read).
        output: ``"list"`` (the maps, shallow to deep) or ``"dict"`` (keyed by each level's
            ``module`` path, timm's ``feature_cls="dict"``).

    Attributes:
        feature_info: the selected levels (a :class:`FeatureInfo`: their dicts, and timm's
            ``channels()`` / ``reduction()`` / ``get_dicts()``).
        width_list: channels of each returned map (what detection necks read).
    """

    def __init__(self, model: nn.Module, out_indices: Optional[Sequence[int]] = None,
                 feature_location: str = "", output: str = "list"):
        super().__init__()
        if output not in ("list", "dict"):
            raise ValueError(f"output must be 'list' or 'dict', got {output!r}")
        self.output = output
        if feature_location not in LOCATIONS:
            raise ValueError(f"feature_location must be one of {LOCATIONS}, got {feature_location!r}")
        expansion = feature_location == "expansion"
        levels = model.expansion_info() if expansion else model.feature_info
        if out_indices is None:
            out_indices = tuple(range(len(levels)))
        try:
            idx, _ = take_indices(len(levels), list(out_indices))
        except ValueError as e:
            raise ValueError(f"out_indices: {e}") from None
        if len(set(idx)) != len(idx):
            raise ValueError(f"out_indices has duplicates: {tuple(out_indices)}")
        self.out_indices = tuple(sorted(idx))
        self.feature_location = feature_location
        self.feature_info = FeatureInfo(levels, self.out_indices)
        self.width_list = [f["num_chs"] for f in self.feature_info]
        model.prune_for_features(self.out_indices[-1])
        self.model = model

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Gradient checkpointing of the backbone's stages (timm's hook)."""
        self.model.set_grad_checkpointing(enable)

    def forward(self, x: torch.Tensor):
        """The selected maps, shallow to deep (a dict keyed by module path with ``output="dict"``).

        Args:
            x: ``(N, in_chans, H, W)`` input.
        """
        if self.feature_location != "expansion":
            maps = self.model._feature_maps(x, self.out_indices)
        else:
            maps = capture(self.model, self.feature_info,
                           lambda: self.model._feature_maps(x, self.out_indices[-1:]))
        if self.output == "dict":
            return {f["module"]: m for f, m in zip(self.feature_info, maps)}
        return maps
