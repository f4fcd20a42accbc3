"""Several training processes (torchrun, one per GPU, on one node or many): their ranks, and the gather that
lets the loss see the whole global batch.

With several processes, every process embeds its share of the global batch of N singers x M segments; the
embeddings are gathered with their gradients, so the loss sees all N singers (as on one device), not only the
local share (voxceleb_trainer computes the loss on each share alone: each GPU sees only its own negatives).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from singerid.checkpoint import CheckpointError


@dataclass(frozen=True)
class Distributed:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The process that validates, writes checkpoints and logs."""
        return self.rank == 0


def setup_distributed() -> tuple[Distributed, torch.device]:
    """Reads torchrun's environment; starts the process group when there is more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(int(os.environ.get("RANK", "0")), world, local), device


class GatherWithGradient(torch.autograd.Function):
    """All processes' tensors concatenated in rank order; the backward pass sums every process's gradient and
    hands each process the part for its own rows (all_reduce, so it works on gloo as well as NCCL)."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local.contiguous())
        ctx.rows = local.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()  # all_reduce works in place: leave autograd's tensor alone
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather_embeddings(local: torch.Tensor, world: Distributed) -> torch.Tensor:
    """All processes' embeddings, in rank order, keeping the gradient path to the local ones."""
    return local if world.world_size == 1 else GatherWithGradient.apply(local)


def gather_labels(local: torch.Tensor, world: Distributed) -> torch.Tensor:
    """All processes' labels, in rank order."""
    if world.world_size == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(world.world_size)]
    dist.all_gather(parts, local)
    return torch.cat(parts)


def check_same_start(epoch: int, device: torch.device) -> None:
    """Every process must resume from the same epoch: the run folder has to be on a filesystem all nodes share."""
    low = torch.tensor([epoch], device=device)
    high = low.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if low.item() != high.item():
        raise CheckpointError(
            f"processes would resume from epochs {low.item()} to {high.item()}: put the run folder on a filesystem "
            "that every node shares"
        )


def barrier(world: Distributed) -> None:
    """Waits for every process (a no-op alone)."""
    if world.world_size > 1:
        dist.barrier()


def finish(world: Distributed) -> None:
    """Ends the process group of a distributed run."""
    if world.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def any_process(flag: bool, world: Distributed, device: torch.device) -> bool:
    """True on every process when `flag` is true on any (the main process's clock ends a timed run for all)."""
    if world.world_size == 1:
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
