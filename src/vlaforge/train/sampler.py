"""Step-indexed batch order: batch k is a pure function of (seed, k).

A resumed run asks for the batches from its checkpoint step on and sees exactly the data an
uninterrupted run would have seen — no sampler state to save.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class StepBatchSampler(Sampler[list[int]]):
    """Infinite stream of shuffled batches; each epoch is a fresh permutation seeded by (seed, epoch).

    With `world_size > 1` every rank computes the same global batch and keeps its own contiguous
    slice (`batch_size` is the global batch), so N processes see exactly the data of one process.
    """

    def __init__(
        self, n: int, batch_size: int, seed: int, *, start_step: int = 0, rank: int = 0, world_size: int = 1
    ):
        if batch_size % world_size:
            raise ValueError(
                f"StepBatchSampler: global batch_size={batch_size} must be divisible by world_size={world_size}"
            )
        self.rank, self.world_size = rank, world_size
        if n < 1:
            raise ValueError("StepBatchSampler: the dataset is empty")
        if batch_size < 1:
            raise ValueError(f"StepBatchSampler: batch_size must be >= 1, got {batch_size}")
        self.n, self.batch_size, self.seed, self.start_step = n, batch_size, seed, start_step
        # Drop the last partial batch when there is at least one full one (constant batch size).
        self.batches_per_epoch = max(1, n // batch_size) if n >= batch_size else 1

    def epoch_permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def _local(self, global_batch: torch.Tensor) -> list[int]:
        per_rank = len(global_batch) // self.world_size
        return global_batch[self.rank * per_rank : (self.rank + 1) * per_rank].tolist()

    def batch(self, step: int) -> list[int]:
        epoch, k = divmod(step, self.batches_per_epoch)
        perm = self.epoch_permutation(epoch)
        return self._local(perm[k * self.batch_size : (k + 1) * self.batch_size])

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            epoch, k = divmod(step, self.batches_per_epoch)
            perm = self.epoch_permutation(epoch)
            for j in range(k, self.batches_per_epoch):
                yield self._local(perm[j * self.batch_size : (j + 1) * self.batch_size])
                step += 1
