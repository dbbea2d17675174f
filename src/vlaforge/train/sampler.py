"""Step-indexed batch order: batch k is a pure function of (seed, k).

A resumed run asks for the batches from its checkpoint step on and sees exactly the data an
uninterrupted run would have seen — no sampler state to save. `StepSeededDataset` does the same for
randomness inside `dataset[i]` (e.g. augmentation in a dataset): every sample is read with the
torch / numpy / random RNGs seeded from (seed, k, i), so it does not depend on which DataLoader
worker reads it, on how many workers there are, or on where a run was resumed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
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


def sample_seed(seed: int, step: int, index: int) -> int:
    """A 64-bit seed for sample `index` of micro-batch `step` of a run seeded `seed` (negative seeds work)."""
    entropy = [seed % 2**64, step, index]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


class StepKeyedBatches(Sampler[list[tuple[int, int]]]):
    """`StepBatchSampler`'s batches with every index tagged by its micro-batch number: [(k, i), ...]."""

    def __init__(self, sampler: StepBatchSampler):
        self.sampler = sampler

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for k, batch in enumerate(self.sampler, start=self.sampler.start_step):
            yield [(k, i) for i in batch]


class StepSeededDataset(torch.utils.data.Dataset):
    """`dataset[i]` for keys (k, i), read with torch / numpy / random seeded by `sample_seed(seed, k, i)`.

    In a DataLoader worker the worker's RNGs are simply reseeded; in the main process (num_workers=0)
    they are restored afterwards, so the training RNG stream is the same with or without workers.
    """

    def __init__(self, dataset: Any, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        k, i = key
        s = sample_seed(self.seed, k, i)
        if torch.utils.data.get_worker_info() is not None:
            _seed_all(s)
            return self.dataset[i]
        saved = torch.get_rng_state(), np.random.get_state(), random.getstate()
        try:
            _seed_all(s)
            return self.dataset[i]
        finally:
            torch.set_rng_state(saved[0])
            np.random.set_state(saved[1])
            random.setstate(saved[2])


def _seed_all(s: int) -> None:
    torch.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)
