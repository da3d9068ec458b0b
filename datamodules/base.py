"""The base LightningDataModule of every benchmark (contract 1 in DESIGN.md).

A subclass states its dataset facts and implements :meth:`ObjectDataModule.make_dataset`;
the base class owns splits, sampling, sharding across DDP ranks and loader settings, so
every benchmark shuffles, shards and evaluates the same way. Methods and callbacks ask it for
what they need through named methods and options (:meth:`ObjectDataModule.sample_batch`, the
labelled subset), never through its ``datasets``.

Why a sampler of our own instead of Lightning's automatic ``DistributedSampler``:
that sampler pads evaluation sets with duplicates so that every rank gets the same number
of images, which counts some test images twice. Ours shards evaluation sets without
padding (uneven shards are fine: metric states are summed across ranks) and shards the
training set into equal parts, as gradient synchronisation requires. Experiments set
``trainer.use_distributed_sampler: false`` (experiments/_base/trainer.yaml).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, Iterator, Optional, Tuple

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn, TrainerStatus
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, default_collate

from datamodules.subsets import RepeatedSubset, labelled_indices

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
            the same order as an uninterrupted one; :meth:`resume_at` also keeps its position.
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1, shuffle: bool = False,
                 even: bool = False, seed: int = 0):
        self.length, self.rank, self.world_size = length, rank, world_size
        self.shuffle, self.even, self.seed, self.epoch = shuffle, even, seed, 0
        self._resume: Optional[Tuple[int, int]] = None

    def set_epoch(self, epoch: int) -> None:  # called by Lightning at each epoch start
        self.epoch = epoch

    def resume_at(self, epoch: int, position: int) -> None:
        """Make the next pass start at ``position`` of this rank's order if it is epoch ``epoch``
        (a run resumed mid-epoch sees the epoch's tail, not its first images again)."""
        self._resume = (epoch, position)

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
        indices = self._indices().tolist()
        if self._resume is not None:
            epoch, position = self._resume
            self._resume = None
            if epoch == self.epoch:
                indices = indices[position:]
        return iter(indices)

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

    Subclasses take their dataset's own arguments and ``batch_size`` (its paper's default) and
    pass the other options below on as ``**options`` (LightningCLI follows them here, so they
    are configured under ``data.init_args`` for every dataset).

    Args:
        batch_size: training batch size per process.
        eval_batch_size: validation/test batch size per process (default: ``batch_size``).
        num_workers: loader workers (0 was the fastest on 2 cores).
        seed: seeds the training order (and procedural generation in subclasses).
        labelled_subset: train on only this many images of ``labelled_split``, a seeded random
            choice (ReDO's supervised baseline, §5.2 and Fig. 4: N labelled images; see
            datamodules/subsets.py); None trains on the whole training split.
        labelled_split: where the N images come from: ``train``, or ``val`` for a dataset whose
            training images have no masks (LFW); validation then uses the validation images
            left out of the choice. Evaluation (``test``, any ``test_split``) reads whole splits.
        labelled_seed: seed of the choice of the N images.
        min_epoch_items: the N images are cycled to at least this many items per epoch.
        drop_last: drop each training epoch's last partial batch (false: train on it too, as
            DTI-Sprites' code does, so epochs have the authors' step counts).
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
                 num_workers: int = 0, seed: int = 0, labelled_subset: Optional[int] = None,
                 labelled_split: str = "train", labelled_seed: int = 0, min_epoch_items: int = 1000,
                 drop_last: bool = True):
        super().__init__()
        if labelled_split not in ("train", "val"):
            raise ValueError(f"labelled_split must be 'train' or 'val', got {labelled_split!r}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.labelled_subset, self.labelled_split = labelled_subset, labelled_split
        self.labelled_seed, self.min_epoch_items = labelled_seed, min_epoch_items
        self.drop_last = drop_last
        self.datasets: Dict[str, Dataset] = {}  # whole splits; methods use sample_batch()
        self._labelled: Optional[Dict[str, Dataset]] = None
        self._train_position: Optional[Dict[str, int]] = None  # from a checkpoint (state_dict)

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
            self._split(split)
        if stage == "fit":
            self._check_one_batch(self._fit_split("train"))  # a labelled subset is chosen here too

    def _check_one_batch(self, train: Dataset) -> None:
        """Training drops the last partial batch (``drop_last``), so a training split smaller than
        one batch per process would train nothing and still end successfully: say so before fitting."""
        world = self._rank_and_world()[1]
        if len(train) // world < (self.batch_size if self.drop_last else 1):
            raise ValueError(f"{self.name}: the 'train' split has {len(train)} images, fewer than one "
                             f"training batch (batch_size {self.batch_size} x {world} process(es)); "
                             "no step would run. Lower data.init_args.batch_size or add images.")

    def sample_batch(self, split: str, num_images: int,
                     spread: bool = False) -> Optional[Dict[str, Tensor]]:
        """``num_images`` items of ``split`` (as fitting reads it) collated into one CPU batch:
        the first ones (pictures), or with ``spread`` evenly spaced over the split (statistics such
        as DTI's initial background, unbiased on class-sorted sets). Sets the split up if needed;
        None for an unknown or empty split."""
        if split not in SPLITS:
            return None
        dataset = self._fit_split(split)
        count = min(num_images, len(dataset))
        indices = (torch.linspace(0, len(dataset) - 1, count).long().tolist() if spread
                   else list(range(count)))
        if not indices:
            return None
        get_items = getattr(dataset, "__getitems__", None)  # procedural sets render a batch at once
        return default_collate(get_items(indices) if get_items else [dataset[i] for i in indices])

    def train_dataloader(self) -> DataLoader:
        loader = self._loader(self._fit_split("train"), self.batch_size, shuffle=True)
        if self._train_position is not None:  # a resumed run: once, in the restored epoch
            position, self._train_position = self._train_position, None
            loader.sampler.resume_at(position["epoch"], position["batches"] * self.batch_size)
        return loader

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._fit_split("val"), self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._split(self.test_split), self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self._split("test"), self.eval_batch_size, shuffle=False)

    def state_dict(self) -> Dict[str, Any]:
        """The seed, and where training is in its epoch (epoch, batches done), so that a resumed
        run's sampler continues there (saved in every checkpoint)."""
        state: Dict[str, Any] = {"seed": self.seed}
        trainer = self.trainer
        fitting = trainer is not None and trainer.state.fn == TrainerFn.FITTING
        if fitting and trainer.state.status == TrainerStatus.RUNNING:
            done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
            if 0 < done < trainer.num_training_batches:  # else the next epoch starts afresh
                state["train_position"] = {"epoch": trainer.current_epoch, "batches": done}
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.seed = state["seed"]
        self._train_position = state.get("train_position")

    def _split(self, split: str) -> Dataset:
        """The whole dataset of ``split``, made once."""
        if split not in self.datasets:
            self.datasets[split] = self.make_dataset(split)
        return self.datasets[split]

    def _fit_split(self, split: str) -> Dataset:
        """What fitting trains (``train``) or selects models (``val``) on: the whole split, or
        its part in the labelled subset."""
        if self.labelled_subset is not None:
            if self._labelled is None:
                self._labelled = self._labelled_sets()
            if split in self._labelled:
                return self._labelled[split]
        return self._split(split)

    def _labelled_sets(self) -> Dict[str, Dataset]:
        """The N chosen images, cycled, for training; the rest for validation when they are
        validation images."""
        source = self._split(self.labelled_split)
        if not 0 < self.labelled_subset <= len(source):
            raise ValueError(f"labelled_subset={self.labelled_subset} must be between 1 and the "
                             f"{len(source)} images of the '{self.labelled_split}' split")
        chosen, rest = labelled_indices(len(source), self.labelled_subset, self.labelled_seed)
        sets = {"train": RepeatedSubset(source, chosen, self.min_epoch_items)}
        if self.labelled_split == "val":  # select models on validation images not trained on
            sets["val"] = Subset(source, sorted(rest))
        return sets

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        rank, world = self._rank_and_world()
        sampler = ShardedSampler(len(dataset), rank, world, shuffle=shuffle, even=shuffle,
                                 seed=self.seed)
        # A generator of its own: each new iterator draws a seed from it, which from the global
        # RNG would shift every later draw of a run resumed mid-epoch (its iterator starts later).
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                          drop_last=shuffle and self.drop_last,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available(),
                          generator=torch.Generator().manual_seed(self.seed))

    def _rank_and_world(self):
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size
