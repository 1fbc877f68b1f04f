"""Several processes: `python -m train` under `torchrun --nproc_per_node N` (DistributedDataParallel).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; with WORLD_SIZE > 1 every process joins one process
group (NCCL on GPUs, gloo on CPUs), trains on its shard of each epoch, and the validation and test
predictions are gathered so every rank computes the same metrics and takes the same early-stopping and
learning-rate decisions. Only rank 0 writes the run folder. Without torchrun nothing here does anything.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.distributed as dist
import torch.nn as nn

from ._errors import ConfigError

__all__ = ["world_size", "rank", "is_main_process", "is_distributed", "setup", "teardown", "barrier",
           "gather_rows", "shard_indices", "all_sum", "convert_trainable_batchnorm", "main_process_first"]

_logger = logging.getLogger("train")


def world_size() -> int:
    """Processes in the run: the process group's size, else torchrun's WORLD_SIZE, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """True on the process that writes files, logs and pushes (rank 0)."""
    return rank() == 0


def is_distributed() -> bool:
    """True while a process group of more than one process is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def setup(device_name: str) -> tuple[torch.device, bool]:
    """Join torchrun's process group when WORLD_SIZE > 1; returns (this rank's device, joined now).

    `device_name` is --device: auto/cuda take the GPU of LOCAL_RANK (backend NCCL), cpu uses gloo.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        return _single_device(device_name) if size <= 1 else _rank_device(device_name), False
    if not dist.is_available():
        raise ConfigError(f"WORLD_SIZE={size} asks for several processes, but this PyTorch build has no "
                          "torch.distributed; run without torchrun")
    device = _rank_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # init_method env://: MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE as torchrun sets them
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                            device_id=device if device.type == "cuda" else None)
    return device, True


def _single_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} asked for CUDA, but no CUDA GPU is available; use --device cpu")
    return device


def _rank_device(name: str) -> torch.device:
    device = _single_device(name)
    if device.type != "cuda":
        return device
    if device.index is not None:
        raise ConfigError(f"--device {name} names one GPU, but under torchrun each process takes the GPU "
                          "of its LOCAL_RANK; pass --device cuda (or auto), and choose GPUs with "
                          "CUDA_VISIBLE_DEVICES")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(f"LOCAL_RANK {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                          "start at most that many processes per node (--nproc_per_node)")
    return torch.device("cuda", local_rank)


def teardown(joined: bool) -> None:
    """Leave the process group if `setup` joined it."""
    if joined and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if is_distributed():
        dist.barrier()


@contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. writes a shared cache), the others after it."""
    if not is_main_process():
        barrier()
    yield
    if is_main_process():
        barrier()


def shard_indices(n: int) -> list[int]:
    """This rank's share of range(n) for evaluation, as DistributedSampler(shuffle=False) picks it.

    The list is padded from the start so every rank has ceil(n / world) items; `gather_rows` undoes it.
    """
    size, me = world_size(), rank()
    if size <= 1:
        return list(range(n))
    per_rank = -(-n // size)
    padded = list(range(n)) + list(range(n))[:per_rank * size - n]
    return padded[me::size]


def gather_rows(local: torch.Tensor, n: int) -> torch.Tensor:
    """Rows of `shard_indices(n)` from every rank -> the (n, ...) tensor in index order, padding dropped."""
    size = world_size()
    if size <= 1 or not is_distributed():
        return local
    parts = [torch.empty_like(local) for _ in range(size)]
    dist.all_gather(parts, local.contiguous())
    # rank r's j-th row is index j * size + r
    return torch.stack(parts, dim=1).reshape(-1, *local.shape[1:])[:n]  # (per_rank, size, ...) -> (n, ...)


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks (the tensor itself in one process)."""
    if is_distributed():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def convert_trainable_batchnorm(model: nn.Module) -> int:
    """Replace every batch norm whose parameters train by torch's SyncBatchNorm; returns how many.

    Frozen batch norms (feature extraction, the frozen stages of partial fine-tuning) keep their own
    statistics and the zoo's keep-eval hook, so they are left as they are.
    """
    converted = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and any(
                    p.requires_grad for p in child.parameters(recurse=False)):
                setattr(parent, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
                converted += 1
    return converted
