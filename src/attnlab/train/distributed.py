"""torchrun DDP, thinly: `torchrun --nproc_per_node K -m attnlab train ...`.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; this module only turns them into a process group
(gloo on CPU, nccl on GPU) and offers the few collectives the trainer needs. Without torchrun
everything degrades to a single process with no process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The one process that writes files and shows progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup(device: str) -> Dist:
    """Join the process group torchrun describes, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    if device == "cuda":
        torch.cuda.set_device(local)
    return Dist(rank, world, local)


def mean(value: torch.Tensor, d: Dist) -> torch.Tensor:
    """The mean of a scalar tensor over processes (for logging; gradients go through DDP)."""
    if not d.active:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / d.world


def any_true(flag: bool, d: Dist, device: torch.device | str = "cpu") -> bool:
    """Whether `flag` holds in any process: decisions every process must take together (a
    time limit read from each process's own clock would otherwise stop them at different
    steps, and the ones left would wait forever in the next all-reduce)."""
    if not d.active:
        return flag
    value = torch.tensor(float(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


def teardown(d: Dist) -> None:
    if d.active and dist.is_initialized():
        dist.destroy_process_group()
