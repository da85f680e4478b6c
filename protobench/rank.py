"""Which rank this process is in a data-parallel run, and what the ranks do together: gather, agree."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def current_dist() -> Dist:
    """This process's rank, from the variables a launcher sets (one process when there are none)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def gather_to_main(tensor: Tensor, dist: Dist) -> Tensor:
    """Concatenate equally shaped shards from every rank (in rank order) on every rank."""
    if dist.world == 1:
        return tensor
    import torch.distributed as tdist

    parts = [torch.empty_like(tensor) for _ in range(dist.world)]
    tdist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def agree(flag: bool, dist: Dist, device: torch.device) -> bool:
    """A decision every rank takes together: true when any rank says so (a checkpoint is a collective under ZeRO)."""
    if dist.world == 1:
        return flag
    import torch.distributed as tdist

    t = torch.tensor([1.0 if flag else 0.0], device=device if device.type == "cuda" else "cpu")
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item())
