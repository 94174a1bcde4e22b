"""Processes and seeds: torchrun's environment, the process group, sums across ranks, and the
per-epoch seeds and sample order that make a resumed run repeat an uninterrupted one."""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field

import torch

from .recipe import Recipe


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(recipe: Recipe) -> DistInfo:
    """Read torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and join the
    process group: NCCL on GPUs, gloo on CPU. A collective that waits ``recipe.dist_timeout_s``
    for a hung rank fails (a dead rank's closed connection fails it at once), so no rank hangs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = recipe.device == "cuda" or (recipe.device == "auto" and torch.cuda.is_available())
    if recipe.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no GPU is available")
    device = torch.device("cuda", local % max(1, torch.cuda.device_count())) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    info = DistInfo(rank, world, local, device)
    if world > 1 and not torch.distributed.is_initialized():
        import datetime

        torch.distributed.init_process_group("nccl" if use_cuda else "gloo",
                                             timeout=datetime.timedelta(seconds=recipe.dist_timeout_s))
        info.initialized_here = True
    return info


def is_peer_failure(e: BaseException) -> bool:
    """A collective failed because another rank died, hung past the timeout or closed its
    connection (gloo / NCCL report these as ``DistError`` subclasses or plain RuntimeErrors)."""
    if isinstance(e, getattr(torch.distributed, "DistError", ())):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and any(k in text for k in (
        "gloo", "NCCL", "Connection reset", "Connection closed", "Timed out", "timed out", "Socket"))


def all_reduce_sum(t: torch.Tensor, dist: DistInfo) -> torch.Tensor:
    if dist.enabled:
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t


def seed_everything(seed: int) -> None:
    import numpy as np

    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + rank * 101 + 1) % (2**63 - 1)


def epoch_order(n: int, seed: int, epoch: int, dist: DistInfo) -> list[int]:
    """This rank's sample order for an epoch (DistributedSampler's rule: shuffle with a
    generator seeded by seed + epoch, pad to a multiple of the world size, take every
    world-th index)."""
    g = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=g).tolist()
    total = math.ceil(n / dist.world) * dist.world
    order += order[: total - n]
    return order[dist.rank:total:dist.world]
