"""The base LightningDataModule of every benchmark (contract 1 in DESIGN.md).

A subclass states its dataset facts and implements :meth:`ObjectDataModule.make_dataset`;
the base class owns splits, sampling, sharding across DDP ranks and loader settings, so
every benchmark shuffles, shards and evaluates the same way.

Why a sampler of our own instead of Lightning's automatic ``DistributedSampler``:
that sampler pads evaluation sets with duplicates so that every rank gets the same number
of images, which counts some test images twice. Ours shards evaluation sets without
padding (uneven shards are fine: metric states are summed across ranks) and shards the
training set into equal parts, as gradient synchronisation requires. Experiments set
``trainer.use_distributed_sampler: false`` (experiments/_base/trainer.yaml).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Dict, Iterator, Optional

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

SPLITS = ("train", "val", "test")


class ShardedSampler(Sampler[int]):
    """Indices of one rank's shard; training order reshuffled per epoch from ``(seed, epoch)``.

    Args:
        length: dataset size.
        rank, world_size: this process's shard.
        shuffle: permute the indices each epoch (training) or keep them in order (evaluation).
        even: give every rank the same number of indices by dropping the remainder (training);
            otherwise shards are uneven and every index is used exactly once (evaluation).
        seed: the permutation of epoch ``e`` is drawn from ``seed + e``, so a resumed run sees
            the same order as an uninterrupted one.
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1, shuffle: bool = False,
                 even: bool = False, seed: int = 0):
        self.length, self.rank, self.world_size = length, rank, world_size
        self.shuffle, self.even, self.seed, self.epoch = shuffle, even, seed, 0

    def set_epoch(self, epoch: int) -> None:  # called by Lightning at each epoch start
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            indices = torch.randperm(self.length, generator=generator)
        else:
            indices = torch.arange(self.length)
        if self.even:
            indices = indices[: self.length - self.length % self.world_size]
        return indices[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices().tolist())

    def __len__(self) -> int:
        if self.even:
            return self.length // self.world_size
        return len(range(self.rank, self.length, self.world_size))


class ObjectDataModule(pl.LightningDataModule, ABC):
    """Base datamodule: facts, splits, seeded sharded loaders.

    Subclasses set the facts (as class attributes or in ``__init__``) and implement
    :meth:`make_dataset`, returning a map-style dataset whose items are dicts of
    per-image tensors following contract 1 (``image`` ``[C, H, W]`` float in [0, 1],
    ``mask``/``semantic`` ``[H, W]`` int64, ``label``/``count`` int64 scalars).

    Args:
        batch_size: training batch size per process.
        eval_batch_size: validation/test batch size per process (default: ``batch_size``).
        num_workers: loader workers (0 was fastest on 2 cores, notes/stack.md).
        seed: seeds the training order (and procedural generation in subclasses).
    """

    image_size: int = 64
    channels: int = 3
    max_objects: int = 1
    num_classes: int = 0  # semantic classes including background; 0 when there are none
    num_background: int = 1  # leading ids of `mask` that are background entities
    # The split ``test`` evaluates: "train" gives Table 1-style train-split scores
    # (``objdecomp test --eval_split train``); the metrics are then logged as ``train/…``.
    test_split: str = "test"

    def __init__(self, batch_size: int = 32, eval_batch_size: Optional[int] = None,
                 num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.datasets: Dict[str, Dataset] = {}

    # --- what a subclass provides -------------------------------------------------------
    @abstractmethod
    def make_dataset(self, split: str) -> Dataset:
        """Return the dataset of ``split`` (one of ``train``, ``val``, ``test``)."""

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def facts(self) -> Dict[str, int]:
        """The dataset facts the CLI links into the model."""
        return {key: getattr(self, key) for key in
                ("image_size", "channels", "max_objects", "num_classes", "num_background")}

    # --- Lightning hooks -------------------------------------------------------------------
    def setup(self, stage: Optional[str] = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": (self.test_split,),
                  "predict": ("test",)}.get(stage, SPLITS)
        for split in wanted:
            if split not in self.datasets:
                self.datasets[split] = self.make_dataset(split)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_split, self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def state_dict(self) -> Dict[str, int]:
        return {"seed": self.seed}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.seed = state["seed"]

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            self.setup()
        dataset = self.datasets[split]
        rank, world = self._rank_and_world()
        sampler = ShardedSampler(len(dataset), rank, world, shuffle=shuffle, even=shuffle,
                                 seed=self.seed)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available())

    def _rank_and_world(self):
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size
