"""Exact, resumable sharding of a dataset across ranks.

Training: one permutation per (seed, epoch), cut into global micro-batches of
``batch_size * world_size``; rank r takes its slice of each. Every sample is used exactly once
per epoch; the last, smaller global batch is split as evenly as possible (and dropped only when it
cannot give every rank 2 samples: at most 2W - 1 samples of the epoch, logged). Each sample carries a seed derived from
(seed, epoch, index), so augmentation does not depend on worker count, rank or resume point.
The position is counted in *samples* of the epoch, so a run can resume on another world size.

Evaluation: rank r takes the contiguous slice ``[r*n//W, (r+1)*n//W)``: no padding, no repeats.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch

_MIX = 0x9E3779B97F4A7C15  # 2**64 / golden ratio: spreads (seed, epoch, index) over 64 bits


def sample_seed(seed: int, epoch: int, index: int) -> int:
    x = (seed * _MIX + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    return x & (2**63 - 1)


def torch_seed(value: int) -> int:
    """``value`` as a torch seed: itself within torch's range [-2**63, 2**64), else modulo 2**64
    (a seed derived from a large train.seed, such as ``date +%s%N``, overflowed at step 1)."""
    return value if -(2**63) <= value < 2**64 else value % 2**64


def epoch_permutation(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    if not shuffle:
        return np.arange(n)
    g = torch.Generator().manual_seed(torch_seed(seed * 1_000_003 + epoch))
    return torch.randperm(n, generator=g).numpy()


def global_batches(
    n: int, batch_size: int, world_size: int, start: int = 0
) -> list[tuple[int, int]]:
    """(begin, end) sample ranges of the global micro-batches of an epoch, from sample ``start``."""
    g = batch_size * world_size
    out = []
    pos = start
    while pos < n:
        end = min(pos + g, n)
        # A last, partial batch must give every rank at least 2 samples (or 1 if the per-device
        # batch is 1): DDP needs every rank to step, and BatchNorm cannot train on one sample
        # with a 1x1 map (InceptionV4's aux head). Fewer are dropped for this epoch only.
        if end - pos < g and end - pos < min(2, batch_size) * world_size:
            break
        out.append((pos, end))
        pos = end
    return out


def rank_slice(begin: int, end: int, rank: int, world_size: int) -> tuple[int, int]:
    """The part of global range [begin, end) that ``rank`` takes (even split, first ranks +1)."""
    m = end - begin
    base, extra = divmod(m, world_size)
    lo = begin + rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


class TrainBatchSampler:
    """Batches of ``(index, sample_seed)`` for one rank; ``set_epoch(epoch, start_sample)``."""

    def __init__(
        self, n: int, batch_size: int, rank: int, world_size: int, seed: int, shuffle: bool = True
    ):
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start_sample: int = 0) -> None:
        self.epoch, self.start = epoch, start_sample

    def batches(self) -> list[tuple[int, int]]:
        return global_batches(self.n, self.batch_size, self.world_size, self.start)

    def __len__(self) -> int:
        return len(self.batches())

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        perm = epoch_permutation(self.n, self.seed, self.epoch, self.shuffle)
        for begin, end in self.batches():
            lo, hi = rank_slice(begin, end, self.rank, self.world_size)
            yield [(int(i), sample_seed(self.seed, self.epoch, int(i))) for i in perm[lo:hi]]


class EvalBatchSampler:
    """Contiguous, unpadded shard of ``range(n)`` for one rank, in batches."""

    def __init__(self, n: int, batch_size: int, rank: int, world_size: int):
        self.lo, self.hi = n * rank // world_size, n * (rank + 1) // world_size
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-(self.hi - self.lo) // self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for b in range(self.lo, self.hi, self.batch_size):
            yield [(i, 0) for i in range(b, min(b + self.batch_size, self.hi))]


class SeededDataset(torch.utils.data.Dataset):
    """Wraps a dataset: item ``(index, seed)`` seeds torch, random and numpy before loading it."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        if torch.utils.data.get_worker_info() is not None:
            return self._load(index, seed)
        # In the main process (num_workers=0) the model's RNG must not be disturbed.
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            try:
                return self._load(index, seed)
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)

    def _load(self, index: int, seed: int):
        # The CPU generator only: torch.manual_seed would also queue a lazy CUDA / XPU / MTIA
        # reseed, formatting a stack trace on every sample (~0.3 ms), and with num_workers=0
        # reseed the model's CUDA generator, which fork_rng(devices=[]) does not restore.
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed & 0xFFFFFFFF)
        return self.dataset[index]
