"""Training on a labelled subset: N seeded images of one split (ReDO's supervised baseline).

ReDO (§5.2, Fig. 4) compares with "a supervised method, keeping the same architecture for F",
trained on 10 to 10,000 labelled images. The N images are a fixed random choice (seeded) of
one split: ``train`` for Flowers and CUB; ``val`` for LFW, whose training images have no
masks, and then the validation images left out of the choice select the model.
:class:`datamodules.base.ObjectDataModule` applies it when ``labelled_subset`` is set.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch.utils.data import Dataset


class RepeatedSubset(Dataset):
    """Items ``indices`` of ``dataset``, cycled to at least ``length`` items per epoch, so
    that a handful of labelled images still fills whole batches."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], length: int):
        self.dataset, self.indices = dataset, list(indices)
        self.length = max(length, len(self.indices))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return self.dataset[self.indices[index % len(self.indices)]]


def labelled_indices(length: int, size: int, seed: int) -> Tuple[List[int], List[int]]:
    """The first ``size`` indices of a seeded random permutation of ``range(length)`` (the
    chosen images) and the rest, in permutation order: the same choice on every rank and run."""
    order = torch.randperm(length, generator=torch.Generator().manual_seed(seed))
    return order[:size].tolist(), order[size:].tolist()
