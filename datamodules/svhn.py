"""SVHN cropped digits (Netzer et al. 2011) as DTI-Sprites uses it for clustering (Sec. 4.2), 32x32.

Files (``objdecomp data svhn`` fetches them): ``train_32x32.mat`` (73,257), ``test_32x32.mat``
(26,032) and ``extra_32x32.mat`` (531,131), MATLAB v5 files with ``X`` uint8 [32, 32, 3, N] and
``y`` [N, 1] in 1..10, where 10 means the digit 0 (mapped to label 0 here).

Splits, following DTI-Sprites' code: ``train`` is train + test + extra ("we ... use 530k unlabeled
extra samples for training"); ``test`` is the labelled set used for evaluation, test + train
(99,289 images); ``val`` is a random 10% (at least 100) of the test file, numpy seed 46.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from datamodules.base import ObjectDataModule
from datamodules.real_data import CorruptFileError, default_root, dti_subset, require

FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}


def load_svhn_mat(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """``(X [32, 32, 3, N] uint8, labels [N] int64 in 0..9)`` from one cropped-digits file."""
    from scipy.io import loadmat

    try:
        data = loadmat(path)
    except Exception as error:  # scipy raises several types for a damaged file
        raise CorruptFileError(f"cannot read {path}: {error}") from error
    images, labels = data.get("X"), data.get("y")
    if images is None or labels is None or images.shape[:3] != (32, 32, 3) or labels.size != images.shape[3]:
        raise CorruptFileError(f"{path}: expected X [32, 32, 3, N] and y [N, 1]")
    return images, np.mod(labels.reshape(-1).astype(np.int64), 10)  # label 10 is the digit 0


class SVHNDigits(Dataset):
    """Items ``image`` [3, 32, 32] and ``label`` from one loaded ``.mat`` file."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: Optional[np.ndarray] = None):
        self.images, self.labels = images, labels
        self.indices = np.arange(labels.size) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return self.indices.size

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        i = int(self.indices[index])
        image = torch.from_numpy(np.ascontiguousarray(self.images[..., i])).permute(2, 0, 1)
        return {"image": image.float().div_(255), "label": torch.tensor(self.labels[i])}


class SVHNDataModule(ObjectDataModule):
    """SVHN for clustering (DTI-Sprites Table 3).

    Args:
        root: folder with the three ``.mat`` files (default ``<data root>/svhn``).
        use_extra: train on ``extra`` too (DTI: yes).
        val_fraction: share of the test file used for validation (DTI: 0.1, at least 100 images).
        batch_size, options: see :class:`ObjectDataModule`.
    """

    dataset_name = "svhn"
    image_size, channels, max_objects, num_classes, num_background = 32, 3, 1, 0, 1
    num_labels = 10

    def __init__(self, root: Optional[str] = None, use_extra: bool = True, val_fraction: float = 0.1,
                 batch_size: int = 128, **options: Any):
        super().__init__(batch_size, **options)
        self.root = default_root(root, self.dataset_name)
        self.use_extra, self.val_fraction = use_extra, val_fraction
        self._loaded: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}

    def part(self, name: str) -> SVHNDigits:
        """One of the three files as a dataset (loaded once per datamodule)."""
        if name not in self._loaded:
            self._loaded[name] = load_svhn_mat(require(self.root / FILES[name], self.dataset_name))
        return SVHNDigits(*self._loaded[name])

    def make_dataset(self, split: str) -> Dataset:
        if split == "val":
            test = self.part("test")
            size = max(round(self.val_fraction * len(test)), 100)
            return SVHNDigits(test.images, test.labels, dti_subset(len(test), size, seed=46))
        names: List[str] = ["test", "train"] + (["extra"] if split == "train" and self.use_extra else [])
        return ConcatDataset([self.part(n) for n in names])
