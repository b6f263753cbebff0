"""A distributed, resumable sampler: the same shuffled order for every process count, startable mid-epoch."""

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["ResumableDistributedSampler", "resumable_loader"]


class ResumableDistributedSampler(Sampler[int | tuple[int, int]]):
    """Shuffle `len(dataset)` indices per epoch from `(seed, epoch)`, give each rank its share, skip what was done.

    Rank `r` of `world_size` takes positions `r, r + world_size, ...` of the epoch's order, so a global batch of
    `world_size * batch` samples is the same set of videos for any number of processes (the two-process run and the
    one-process run with the same global batch see the same data). The tail that does not fill a whole global batch
    is dropped, so every rank runs the same number of steps.

    Args:
        length: number of samples in the dataset.
        batch_size: samples per process and step.
        rank: this process's rank.
        world_size: number of processes.
        seed: shuffle seed (shared by all ranks).
        shuffle: shuffle each epoch; False keeps the dataset order.
        with_epoch: yield `(epoch, index)` keys instead of indices, for the tubemask datasets
            ([`SampleKey`][tubemask.data.loading.SampleKey]): each sample then carries its epoch into the
            DataLoader's workers, so `persistent_workers=True` keeps every epoch's clips exact.
    """

    def __init__(
        self,
        length: int,
        *,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        with_epoch: bool = False,
    ) -> None:
        if length < batch_size * world_size:
            raise ValueError(
                f"dataset has {length} samples, fewer than one global batch ({batch_size} x {world_size} processes); "
                "lower --batch-size or add videos"
            )
        self.length = length
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.with_epoch = with_epoch
        self.epoch = 0
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        """Steps (batches per process) in one epoch."""
        return self.length // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, *, start_batch: int = 0) -> None:
        """Select the epoch's order and the batch to start from (for resuming mid-epoch)."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start_batch={start_batch} must be in [0, {self.batches_per_epoch}]")
        self.epoch = epoch
        self.start_batch = start_batch

    def epoch_order(self) -> list[int]:
        """The epoch's global order, truncated to whole global batches."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        return order[: self.batches_per_epoch * self.batch_size * self.world_size]

    def __iter__(self) -> Iterator[int | tuple[int, int]]:
        order = self.epoch_order()
        start = self.start_batch * self.batch_size * self.world_size
        mine = order[start + self.rank :: self.world_size]
        return iter([(self.epoch, i) for i in mine] if self.with_epoch else mine)

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


def resumable_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    workers: int = 0,
    pin_memory: bool = False,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[ResumableDistributedSampler, DataLoader]:
    """The recipes' training loader: a [`ResumableDistributedSampler`][tubemask.train.sampler.ResumableDistributedSampler]
    yielding `(epoch, index)` keys and a DataLoader whose workers live across epochs.

    The two go together: workers that outlive an epoch keep the epoch their dataset copy started with, so only keys
    that carry their epoch keep every epoch's clips exact (the tubemask datasets take them, see
    [`SampleKey`][tubemask.data.loading.SampleKey]); in exchange the loader does not re-fork its workers each epoch
    (about 0.3 s per epoch with 2 workers on the synthetic set). Call `sampler.set_epoch(epoch, start_batch=...)`
    before iterating each epoch; incomplete batches are dropped.

    Args:
        dataset: A dataset taking `(epoch, index)` keys.
        batch_size: Samples per process and step.
        rank: This process's rank.
        world_size: Number of processes.
        seed: Shuffle seed (shared by all ranks).
        workers: DataLoader worker processes (0: load in the main process).
        pin_memory: Pin batches for faster host-to-GPU copies.
        collate_fn: The DataLoader's collate function (None: its default).
        generator: The DataLoader's generator for its worker seeds (None: drawn from the global RNG).

    Returns:
        `(sampler, loader)`.
    """
    sampler = ResumableDistributedSampler(
        len(dataset), batch_size=batch_size, rank=rank, world_size=world_size, seed=seed, with_epoch=True
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        drop_last=True,
        collate_fn=collate_fn,
        generator=generator,
    )
    return sampler, loader
