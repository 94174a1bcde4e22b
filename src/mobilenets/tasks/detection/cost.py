"""What a detector costs: MACs of one forward pass (for ``mobilenets list --task detection``,
the README table and the benchmarks)."""

from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def detector_macs(model: nn.Module, size: tuple[int, int] = (320, 320), seed: int = 0) -> int:
    """Multiply-accumulates (FLOPs / 2, ``torch.utils.flop_counter``) of one eval forward pass on
    one ``size`` image, as torchvision reports its detectors' GFLOPs: backbone, neck and heads
    (Faster R-CNN's box head over the proposals this image yields; NMS and box decoding are not
    counted). Faster R-CNN and RetinaNet first resize the image to their ``min_size``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    was = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, *size, generator=g)
    try:
        with FlopCounterMode(display=False) as counter:
            model([image])
    finally:
        model.train(was)
    return counter.get_total_flops() // 2
