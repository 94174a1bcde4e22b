"""Multi-scale feature extraction (``create_model(..., features_only=True)``)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn


class FeatureExtractor(nn.Module):
    """Wraps a backbone and returns the feature maps at ``out_indices`` (one per resolution
    level of ``model.feature_info``), as a list, shallow to deep.

    Any model works that offers ``feature_info`` (dicts with ``module``, ``num_chs``,
    ``reduction``), ``_feature_maps(x, levels)`` (the maps at those levels) and
    ``prune_for_features(max_index)`` (drop the classifier and everything deeper than that
    level, so unused stages are neither stored nor run).

    Attributes:
        feature_info: the selected levels' dicts.
        width_list: channels of each returned map (what detection necks read).
    """

    def __init__(self, model: nn.Module, out_indices: Optional[Sequence[int]] = None):
        super().__init__()
        levels = model.feature_info
        n = len(levels)
        if out_indices is None:
            out_indices = tuple(range(n))
        idx = []
        for i in out_indices:
            if not isinstance(i, int) or not -n <= i < n:
                raise ValueError(f"out_indices must be integers in [{-n}, {n - 1}] for this model "
                                 f"({n} feature levels), got {tuple(out_indices)}")
            idx.append(i % n)
        if len(set(idx)) != len(idx):
            raise ValueError(f"out_indices has duplicates: {tuple(out_indices)}")
        self.out_indices = tuple(sorted(idx))
        self.feature_info = [dict(levels[i]) for i in self.out_indices]
        self.width_list = [f["num_chs"] for f in self.feature_info]
        model.prune_for_features(self.out_indices[-1])
        self.model = model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model._feature_maps(x, self.out_indices)
