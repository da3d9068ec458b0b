"""LSUN object categories (Yu et al. 2015) from their official lmdb databases, as PerturbGAN
trains on them (§4): car, horse, chair, bird; and the two-category Car + Horse mix (Fig. 6).

On disk: ``<root>/<category>_lmdb/`` (or ``<root>/<category>/``) holding ``data.mdb`` and
``lock.mdb``, unpacked from the official ``<category>.zip`` (``objdecomp data lsun --variant car``). Each record is
``key`` = the image's id (ASCII hex) and ``value`` = the encoded image (JPEG or WebP).

As the authors' code: the first ``max_images`` keys in the database's (sorted) cursor order,
decoded with PIL, converted to RGB and squashed (no aspect-preserving crop) to a square. LSUN has
no masks: items carry ``image`` only, unless ``pseudo_masks`` asks for the masks Mask R-CNN found
in the evaluated images (PerturbGAN's Table 2), stored beside the database in
``<root>/<category>_maskrcnn/`` by ``python -m objdecomp.methods.perturbgan.evaluation annotate``.
Splits: ``train`` is the first ``max_images`` images;
``val`` and ``test`` are the first ``eval_images`` of them (the paper evaluates on the first
10,000 images of LSUN Car, which its generator also trained on). A mix of categories
interleaves them image by image.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
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


def pseudo_mask_folder(root: Path, category: str) -> Path:
    return root / f"{category}_maskrcnn"


def save_pseudo_masks(folder: Path, keys: Sequence[bytes], masks: np.ndarray, detected: np.ndarray) -> None:
    """Mask R-CNN's object masks ``[N, S, S]`` (bool; empty where nothing was detected) of the
    records ``keys`` in order, and which had a detection; written to a sibling folder that is
    renamed into place, so a killed annotation never leaves half a set."""
    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    np.save(partial / "keys.npy", np.array(keys, dtype=bytes))
    np.save(partial / "masks.npy", np.asarray(masks, dtype=bool))
    np.save(partial / "detected.npy", np.asarray(detected, dtype=bool))
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)


class PseudoMasks(NamedTuple):
    keys: np.ndarray
    masks: np.ndarray  # [N, S, S] bool, memory-mapped
    detected: np.ndarray


def load_pseudo_masks(folder: Path) -> PseudoMasks:
    return PseudoMasks(np.load(folder / "keys.npy"), np.load(folder / "masks.npy", mmap_mode="r"),
                       np.load(folder / "detected.npy"))


class LSUNImages(Dataset):
    """Images of ``(folder, key)`` records, each squashed to ``size`` × ``size``, with their
    object ``mask`` (0 background, 1 object) when ``masks`` are given."""

    def __init__(self, records: Sequence[Tuple[Path, bytes]], size: int,
                 masks: Optional[np.ndarray] = None):
        self.records, self.size, self.masks = list(records), size, masks

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
        item = {"image": image_tensor(fit(image, self.size, "bilinear", crop=False))}
        if self.masks is not None:
            mask = torch.from_numpy(np.array(self.masks[index], dtype=np.uint8))[None, None].float()
            item["mask"] = F.interpolate(mask, size=self.size, mode="nearest")[0, 0].long()
        return item


class LSUNDataModule(ObjectDataModule):
    """One LSUN object category, or a mix of several (``category: car+horse``).

    Args:
        category: a category name, or names joined by ``+`` (interleaved image by image).
        root: folder holding ``<category>_lmdb/`` (default ``<data root>/lsun``).
        image_size: side of the square images.
        max_images: images per category taken from the start of the database (100k, §4).
        eval_images: images of the validation and test splits (the first ones; 10k in §4).
        pseudo_masks: ``"all"``: the evaluated images carry Mask R-CNN's object mask as their
            ground truth, empty where it detected nothing (Table 2, "all"); ``"detected"``: only
            the images where it detected the category (Table 2, "detected"); None: no masks.
        batch_size, options: see :class:`ObjectDataModule`.
    """

    dataset_name = "lsun"
    channels, max_objects, num_classes, num_background = 3, 1, 0, 1

    def __init__(self, category: str = "car", root: Optional[str] = None, image_size: int = 128,
                 max_images: int = 100_000, eval_images: int = 10_000,
                 pseudo_masks: Optional[str] = None, batch_size: int = 32, **options: Any):
        super().__init__(batch_size, **options)
        self.categories = category.split("+")
        unknown = [c for c in self.categories if c not in CATEGORIES]
        if unknown:
            raise ValueError(f"unknown LSUN object categories {unknown}; known: {', '.join(CATEGORIES)}")
        if pseudo_masks not in (None, "all", "detected"):
            raise ValueError(f"pseudo_masks must be 'all', 'detected' or None, got {pseudo_masks!r}")
        if pseudo_masks and len(self.categories) > 1:
            raise ValueError("pseudo_masks: Mask R-CNN's masks are kept per category, not for a mix")
        self.pseudo_masks = pseudo_masks
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
        if split == "train":
            return LSUNImages(records, self.image_size)
        records = records[: self.eval_images]
        if not self.pseudo_masks:
            return LSUNImages(records, self.image_size)
        reference = self.pseudo_reference(records)
        if self.pseudo_masks == "all":
            return LSUNImages(records, self.image_size, reference.masks)
        kept = np.flatnonzero(reference.detected)
        return LSUNImages([records[i] for i in kept], self.image_size, reference.masks[kept])

    def pseudo_reference(self, records: Sequence[Tuple[Path, bytes]]) -> PseudoMasks:
        """Mask R-CNN's masks of ``records``, checked to be of those very images."""
        category = self.categories[0]
        folder = pseudo_mask_folder(self.root, category)
        command = (f"python -m objdecomp.methods.perturbgan.evaluation annotate --category {category} "
                   f"--images {self.eval_images}")
        if not (folder / "masks.npy").is_file():
            raise DatasetNotFoundError(self.dataset_name, folder,
                                       f"no Mask R-CNN masks of the evaluated images; `{command}`")
        reference = load_pseudo_masks(folder)
        if len(reference.keys) < len(records) or any(
                bytes(k) != key for k, (_, key) in zip(reference.keys, records)):
            raise CorruptFileError(f"{folder} holds the masks of other images than the first "
                                   f"{len(records)} of {category}_lmdb; annotate again: `{command}`")
        return PseudoMasks(reference.keys[:len(records)], reference.masks[:len(records)],
                           reference.detected[:len(records)])
