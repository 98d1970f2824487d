"""PyTorch DDP plumbing: `torchrun` sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything is a no-op.

The training loop asks this module for its rank, wraps the model, and reduces decisions across ranks, so the
same `irp train` command runs on one CPU, one GPU, several GPUs, or several machines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import nn


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        if not self.enabled:
            return model
        ids = [self.local_rank] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's decision, seen by every rank."""
        if not self.enabled:
            return flag
        value = torch.tensor([1 if flag else 0], device=self.device)
        torch_dist.broadcast(value, src=0)
        return bool(value.item())

    def shutdown(self) -> None:
        if self.enabled and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def init_from_env(device_preference: str = "auto") -> DistContext:
    """Join the process group that torchrun describes (NCCL on GPUs, gloo on CPUs), or run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_preference != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank, world_size, local_rank, device)
