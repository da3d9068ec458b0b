"""LSUN object categories (Yu et al. 2015) from their official lmdb databases, as PerturbGAN
trains on them (§4): car, horse, chair, bird; and the two-category Car + Horse mix (Fig. 6).

On disk: ``<root>/<category>_lmdb/`` (or ``<root>/<category>/``) holding ``data.mdb`` and
``lock.mdb``, unpacked from the official ``<category>.zip`` (``objdecomp data lsun --variant car``). Each record is
``key`` = the image's id (ASCII hex) and ``value`` = the encoded image (JPEG or WebP).

As the authors' code: the first ``max_images`` keys in the database's (sorted) cursor order,
decoded with PIL, converted to RGB and squashed (no aspect-preserving crop) to a square. LSUN has
no masks: items carry ``image`` only. Splits: ``train`` is the first ``max_images`` images;
``val`` and ``test`` are the first ``eval_images`` of them (the paper evaluates on the first
10,000 images of LSUN Car, which its generator also trained on). A mix of categories
interleaves them image by image.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from datamodules.base import ObjectDataModule
from datamodules.paths import DatasetNotFoundError
from datamodules.real_data import CorruptFileError, default_root, fit, image_tensor

CATEGORIES = ("airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
              "cow", "dining_table", "dog", "horse", "motorbike", "person", "potted_plant",
              "sheep", "sofa", "train", "tv-monitor")


PERTURBGAN_CATEGORIES = ("car", "horse", "chair", "bird")


def lmdb_folder(root: Path, category: str) -> Path:
    """``<root>/<category>_lmdb``, or ``<root>/<category>`` when only that holds a database."""
    plain = root / category
    if not (root / f"{category}_lmdb").exists() and (plain / "data.mdb").is_file():
        return plain
    return root / f"{category}_lmdb"


_ENVIRONMENTS: Dict[Tuple[int, str], Any] = {}


def environment(folder: Path):
    """The read-only lmdb environment of ``folder``, opened once per process (lmdb refuses a
    second open of one database in a process; loader workers open their own)."""
    import lmdb  # a dependency of this loader only

    key = (os.getpid(), str(Path(folder).resolve()))
    if key not in _ENVIRONMENTS:
        _ENVIRONMENTS[key] = lmdb.open(str(folder), readonly=True, lock=False, readahead=False,
                                       meminit=False, max_readers=64)
    return _ENVIRONMENTS[key]


def read_keys(folder: Path, count: int) -> List[bytes]:
    """The first ``count`` keys of the database in cursor order."""
    keys: List[bytes] = []
    with environment(folder).begin(write=False) as txn:
        for key in txn.cursor().iternext(keys=True, values=False):
            keys.append(bytes(key))
            if len(keys) >= count:
                break
    return keys


class LSUNImages(Dataset):
    """Images of ``(folder, key)`` records, each squashed to ``size`` × ``size``."""

    def __init__(self, records: Sequence[Tuple[Path, bytes]], size: int):
        self.records, self.size = list(records), size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        folder, key = self.records[index]
        with environment(folder).begin(write=False) as txn:
            value = txn.get(key)
        if value is None:
            raise CorruptFileError(f"{folder}: key {key!r} has no value")
        try:
            with Image.open(io.BytesIO(value)) as image:
                image = image.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise CorruptFileError(f"{folder}: cannot decode the image of key {key!r}: {error}") from error
        return {"image": image_tensor(fit(image, self.size, "bilinear", crop=False))}


class LSUNDataModule(ObjectDataModule):
    """One LSUN object category, or a mix of several (``category: car+horse``).

    Args:
        category: a category name, or names joined by ``+`` (interleaved image by image).
        root: folder holding ``<category>_lmdb/`` (default ``<data root>/lsun``).
        image_size: side of the square images.
        max_images: images per category taken from the start of the database (100k, §4).
        eval_images: images of the validation and test splits (the first ones; 10k in §4).
        batch_size, options: see :class:`ObjectDataModule`.
    """

    dataset_name = "lsun"
    channels, max_objects, num_classes, num_background = 3, 1, 0, 1

    def __init__(self, category: str = "car", root: Optional[str] = None, image_size: int = 128,
                 max_images: int = 100_000, eval_images: int = 10_000, batch_size: int = 32,
                 **options: Any):
        super().__init__(batch_size, **options)
        self.categories = category.split("+")
        unknown = [c for c in self.categories if c not in CATEGORIES]
        if unknown:
            raise ValueError(f"unknown LSUN object categories {unknown}; known: {', '.join(CATEGORIES)}")
        self.root = default_root(root, self.dataset_name)
        self.image_size, self.max_images, self.eval_images = image_size, max_images, eval_images
        self._records: Optional[List[Tuple[Path, bytes]]] = None

    def records(self) -> List[Tuple[Path, bytes]]:
        if self._records is None:
            per_category = []
            for category in self.categories:
                folder = lmdb_folder(self.root, category)
                if not (folder / "data.mdb").is_file():
                    raise DatasetNotFoundError(self.dataset_name, folder,
                                               f"missing {category}_lmdb/data.mdb; "
                                               f"`objdecomp data lsun --variant {category}`")
                per_category.append([(folder, k) for k in read_keys(folder, self.max_images)])
            # interleave: image i of every category, then image i + 1, ...
            self._records = [r for group in zip(*per_category) for r in group] if len(per_category) > 1 \
                else per_category[0]
        return self._records

    def make_dataset(self, split: str) -> Dataset:
        records = self.records()
        if split != "train":
            records = records[: self.eval_images]
        return LSUNImages(records, self.image_size)
