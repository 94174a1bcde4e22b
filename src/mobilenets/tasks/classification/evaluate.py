"""Validation: loss, top-1 / top-5 (and optionally the confusion matrix) summed over ranks."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...train.distributed import DistInfo, all_reduce_sum


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, num_classes: int,
             dist: Optional[DistInfo] = None, channels_last: bool = False,
             confusion: bool = False) -> dict:
    """Loss (plain cross-entropy), top-1 and top-5 (%), summed over all ranks."""
    dist = dist or DistInfo()
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # loss, top1, top5, n
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64) if confusion else None
    k = min(5, num_classes)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x).float()
        sums[0] += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(k, dim=1).indices
        sums[1] += (top[:, 0] == y).sum().item()
        sums[2] += (top == y[:, None]).any(dim=1).sum().item()
        sums[3] += len(y)
        if cm is not None:
            cm += torch.bincount((y * num_classes + top[:, 0]).cpu(), minlength=num_classes ** 2).view(
                num_classes, num_classes)
    all_reduce_sum(sums, dist)
    if cm is not None:
        all_reduce_sum(cm, dist)
    n = max(1.0, sums[3].item())
    out = {"loss": sums[0].item() / n, "top1": 100 * sums[1].item() / n, "top5": 100 * sums[2].item() / n,
           "n": int(sums[3].item())}
    if cm is not None:
        out["confusion"] = cm
    return out
