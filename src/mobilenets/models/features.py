"""Multi-scale feature extraction (``create_model(..., features_only=True)``)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from .intermediates import LOCATIONS, capture, take_indices


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

    Attributes:
        feature_info: the selected levels' dicts.
        width_list: channels of each returned map (what detection necks read).
    """

    def __init__(self, model: nn.Module, out_indices: Optional[Sequence[int]] = None,
                 feature_location: str = ""):
        super().__init__()
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
        self.feature_info = [dict(levels[i]) for i in self.out_indices]
        self.width_list = [f["num_chs"] for f in self.feature_info]
        model.prune_for_features(self.out_indices[-1])
        self.model = model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The selected maps, shallow to deep.

        Args:
            x: ``(N, in_chans, H, W)`` input.
        """
        if self.feature_location != "expansion":
            return self.model._feature_maps(x, self.out_indices)
        return capture(self.model, self.feature_info,
                       lambda: self.model._feature_maps(x, self.out_indices[-1:]))
