"""What a task model costs: MACs of one forward pass at the size its task is reported at
(``mobilenets list --task ...``, ``mobilenets info``, the README tables and the benchmarks),
as torchvision reports its models' GFLOPs (FLOPs / 2, ``torch.utils.flop_counter``)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

#: the input size each task's MACs are reported at: torchvision's SSDLite / low-res Faster R-CNN
#: size, and its segmentation evaluation size
COST_SIZE = {"detection": 320, "segmentation": 520}


@torch.no_grad()
def segmenter_macs(model: nn.Module, size: tuple[int, int] = (520, 520), seed: int = 0) -> int:
    """Multiply-accumulates of one eval forward pass of a segmenter on one ``size`` image
    (backbone, heads, the aux head when present, the upsampling convolutions; interpolation is
    not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    was = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    try:
        with FlopCounterMode(display=False) as counter:
            model(torch.rand(1, 3, *size, generator=g))
    finally:
        model.train(was)
    return counter.get_total_flops() // 2


def task_macs(model: nn.Module, task: str, size: Optional[int] = None) -> int:
    """MACs of a detector or segmenter at ``size`` (default: :data:`COST_SIZE` of its task)."""
    s = COST_SIZE[task] if size is None else size
    if task == "detection":
        from .detection.cost import detector_macs
        return detector_macs(model, (s, s))
    if task == "segmentation":
        return segmenter_macs(model, (s, s))
    raise ValueError(f"task must be one of {sorted(COST_SIZE)}, got {task!r}")


def find_taps(model: nn.Module):
    """The :class:`~mobilenets.tasks.backbone.Taps` inside a task model (what its heads read)."""
    from .backbone import Taps

    return next(m for m in model.modules() if isinstance(m, Taps))
