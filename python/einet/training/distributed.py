"""Several processes (``torchrun``): joining and leaving the process group, ranks, sums over
processes. :func:`einet.training.loop.train` runs DistributedDataParallel inside a group."""

from __future__ import annotations

import os

import torch
from torch import nn


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed process group; (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


_JOINED = False  # whether init_distributed created the process group (finish_distributed then ends it)


def init_distributed(device: str = "cpu") -> tuple[int, int, str]:
    """Join the process group that ``torchrun`` describes in the environment (WORLD_SIZE, RANK,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT): gloo on the CPU, nccl on CUDA, where each process takes
    GPU LOCAL_RANK. Returns (rank, world size, device). Without WORLD_SIZE > 1 nothing happens:
    (0, 1, device). An already initialised group is used as it is."""
    global _JOINED
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), device
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, device
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch has no torch.distributed")
    if torch.device(device).type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    _JOINED = True
    return dist.get_rank(), dist.get_world_size(), device


def finish_distributed() -> None:
    """Leave the process group :func:`init_distributed` created (no-op otherwise)."""
    global _JOINED
    import torch.distributed as dist

    if _JOINED and dist.is_initialized():
        dist.destroy_process_group()
    _JOINED = False


def all_reduce(tensor: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """The sum over processes (nccl sums on the GPU, so the tensor goes to the model's device and back)."""
    import torch.distributed as dist

    device = tensor.device
    if dist.get_backend() == "nccl":
        tensor = tensor.to(next(model.parameters()).device)
    dist.all_reduce(tensor)
    return tensor.to(device)
