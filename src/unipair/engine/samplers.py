"""Batch samplers that make one process and N processes see the same global batches.

Training: each epoch is a seeded permutation cut into global batches of ``batch_size``; process
r takes every N-th sample of each global batch. The union over processes is exactly the
single-process batch, so DDP averages the same gradient a single process computes.
Evaluation: process r takes samples r, r+N, ... with no padding, so no sample counts twice.

Each batch of indices is an :class:`IndexBatch`, a list that also carries the epoch, so a
dataset that augments seeds every sample from (run seed, epoch, index) in whichever DataLoader
worker fetches it: the augmentations do not depend on the number of workers, and a resumed run
sees those of the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from unipair.data.dataset import IndexBatch
from unipair.errors import ConfigError

__all__ = ["GlobalBatchSampler", "IndexBatch", "ShardBatchSampler"]


class GlobalBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        if batch_size < world_size:
            raise ConfigError(
                f"batch_size {batch_size} is smaller than the number of processes {world_size}"
            )
        if n < world_size:
            raise ConfigError(f"{n} training samples cannot feed {world_size} processes")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _global_batches(self) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        batches = list(perm.split(self.batch_size))
        last = batches[-1]
        if len(last) < self.batch_size and (self.drop_last or len(last) < self.world_size):
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for b in self._global_batches():
            yield IndexBatch(b[self.rank :: self.world_size].tolist(), self.epoch)

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        keep_rest = rest > 0 and not self.drop_last and rest >= self.world_size
        return full + int(keep_rest)


class ShardBatchSampler(Sampler[list[int]]):
    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = torch.arange(rank, n, world_size)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for b in self.indices.split(self.batch_size):
            yield IndexBatch(b.tolist())

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)
