"""Process group and device for a run launched directly or by ``torchrun``.

``torchrun --nproc_per_node N ...`` sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; each process then joins one
process group (NCCL when it trains on CUDA, gloo on CPU: the CPU path is what CI tests with 2 processes) and uses
GPU ``LOCAL_RANK``. Rank 0 alone writes files.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from nbseg.errors import ConfigError

def dist_info() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment; ``(0, 1, 0)`` for a plain process."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's GPU if CUDA is visible, else the CPU; ``cuda`` -> GPU ``local_rank`` (an error
    without one); anything else is taken as a torch device string (``cpu``, ``cuda:1``)."""
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda but no CUDA device is visible; use device=cpu or device=auto")
        return torch.device(f"cuda:{local_rank}")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device={device!r} is not a device; use auto, cpu, cuda or cuda:N") from None


def init_distributed(device: str) -> tuple[int, int, torch.device]:
    """Join torchrun's process group if there is one (NCCL on CUDA, gloo on CPU). Returns (rank, world, device)."""
    rank, world, local_rank = dist_info()
    resolved = resolve_device(device, local_rank)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)   # before NCCL starts, so each process's collectives use its own GPU
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return rank, world, resolved
