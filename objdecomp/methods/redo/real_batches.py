"""D's real images, drawn apart from the batch being redrawn (Algorithm 1, line 11).

The authors' code reads them from a second iterator over the training set; Lightning hands a
training step one batch, so the module reads the other from :func:`real_batch_loader`, a
second loader over the dataset of the training loader Lightning uses. Its order depends on the
batch counter alone: epoch ``e`` of the stream is a permutation seeded by the training seed
and ``e``, so a run resumed at batch ``t`` reads the same real images from ``t`` on as an
uninterrupted run.
"""

from __future__ import annotations

from typing import Iterator, List

import torch
from torch.utils.data import DataLoader, Sampler

# Mixed into the stream's seeds so that its permutations never equal those of the training
# loader, which seeds epoch e with ``seed + e`` (datamodules/base.py).
STREAM_SALT = 0x5DEECE66D


class IndependentBatches(Sampler[List[int]]):
    """Endless batches of dataset indices, from batch ``start`` of the sequence on.

    Each epoch is a fresh permutation of the ``length`` indices, seeded by ``(seed, epoch)``;
    like the training loader, it is trimmed to a multiple of ``world_size``, this rank takes
    every ``world_size``-th index, and the last partial batch is dropped.
    """

    def __init__(self, length: int, batch_size: int, seed: int = 0, start: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.length, self.batch_size, self.seed, self.start = length, batch_size, seed, start
        self.rank, self.world_size = rank, world_size
        if self.batches_per_epoch() < 1:
            raise ValueError(f"{length} images cannot fill one batch of {batch_size} on each of "
                             f"{world_size} process(es)")

    def batches_per_epoch(self) -> int:
        return self.length // self.world_size // self.batch_size

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """This rank's indices in epoch ``epoch``."""
        generator = torch.Generator().manual_seed((self.seed + epoch) ^ STREAM_SALT)
        order = torch.randperm(self.length, generator=generator)
        return order[: self.length - self.length % self.world_size][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[List[int]]:
        epoch, first = divmod(self.start, self.batches_per_epoch())
        while True:
            order = self.epoch_order(epoch)
            for batch in range(first, self.batches_per_epoch()):
                yield order[batch * self.batch_size : (batch + 1) * self.batch_size].tolist()
            epoch, first = epoch + 1, 0


def real_batch_loader(loader: DataLoader, start: int = 0, rank: int = 0,
                      world_size: int = 1) -> DataLoader:
    """An endless loader of batches drawn independently of ``loader``'s, with its dataset,
    batch size, collation and workers, from batch ``start`` on.

    ``loader``'s sampler seed (if it has one) seeds the stream. A loader without a batch size
    yields dataset items that are whole batches; the stream then draws whole items.
    """
    seed = int(getattr(loader.sampler, "seed", 0))
    common = dict(num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                  pin_memory=loader.pin_memory)
    if loader.batch_size is None:
        items = _SingleItems(IndependentBatches(len(loader.dataset), 1, seed, start, rank,
                                                world_size))
        return DataLoader(loader.dataset, sampler=items, batch_size=None, **common)
    batches = IndependentBatches(len(loader.dataset), loader.batch_size, seed, start, rank,
                                 world_size)
    return DataLoader(loader.dataset, batch_sampler=batches, **common)


class _SingleItems(Sampler[int]):
    """The indices of batches of one, one by one."""

    def __init__(self, batches: IndependentBatches):
        self.batches = batches

    def __iter__(self) -> Iterator[int]:
        return (batch[0] for batch in self.batches)
