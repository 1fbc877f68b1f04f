"""The order of a training epoch: seeded by (seed, epoch), so a run resumed mid-epoch sees the same batches.

Shuffled or class-balanced, optionally with a per-item seed for reproducible augmentation, and sharded
across the ranks of a torchrun job the way DistributedSampler shards. The engine's DataLoader draws its
batches from :class:`EpochBatchSampler`.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .loop import mix_seed

__all__ = ["epoch_batches", "EpochBatchSampler"]


def epoch_batches(labels: Sequence[int], epoch: int, seed: int, batch_size: int,
                  sampler: str = "shuffle", with_item_seeds: bool = False, rank: int = 0,
                  world_size: int = 1) -> list[list[Any]]:
    """The batches of one training epoch: a seeded shuffle, or class-balanced draws with replacement.

    With ``with_item_seeds`` every item is (index, seed) so augmentation is reproducible per item.
    A last batch of a single image is merged into the one before (batch norm needs two). With several
    processes every rank draws the same order and keeps every world_size-th item from its rank on, the
    order padded from its start to a multiple of world_size as DistributedSampler does, so all ranks
    get the same number of batches of ``batch_size`` (per process).
    """
    n = len(labels)
    generator = torch.Generator().manual_seed(mix_seed(seed, epoch, 0))
    if sampler == "shuffle":
        order = torch.randperm(n, generator=generator).tolist()
    elif sampler == "balanced":
        counts = np.bincount(np.asarray(labels), minlength=max(labels) + 1).astype(np.float64)
        weights = torch.as_tensor(1.0 / counts[np.asarray(labels)], dtype=torch.float64)
        order = torch.multinomial(weights, n, replacement=True, generator=generator).tolist()
    else:
        raise ValueError(f"unknown sampler {sampler!r}; expected shuffle or balanced")
    items: list[Any] = ([(i, mix_seed(seed, epoch, pos + 1)) for pos, i in enumerate(order)]
                        if with_item_seeds else order)
    if world_size > 1:
        items = (items + items[:(-n) % world_size])[rank::world_size]
        n = len(items)
    batches = [items[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        last = batches.pop()
        batches[-1] = batches[-1] + last
    return batches


class EpochBatchSampler:
    """A batch sampler whose batches are set per epoch (and start step, when resuming)."""

    def __init__(self, labels: Sequence[int], batch_size: int, seed: int, sampler: str,
                 with_item_seeds: bool, rank: int = 0, world_size: int = 1):
        self.labels, self.batch_size, self.seed = list(labels), batch_size, seed
        self.sampler, self.with_item_seeds = sampler, with_item_seeds
        self.rank, self.world_size = rank, world_size
        self.batches: list[list[Any]] = []
        self.start = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> int:
        """Prepare `epoch`, skipping its first `start_step` batches; returns its number of batches."""
        self.batches = epoch_batches(self.labels, epoch, self.seed, self.batch_size, self.sampler,
                                     self.with_item_seeds, self.rank, self.world_size)
        self.start = start_step
        return len(self.batches)

    def __iter__(self) -> Iterator[list[Any]]:
        return iter(self.batches[self.start:])

    def __len__(self) -> int:
        return len(self.batches) - self.start
