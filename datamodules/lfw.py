"""Labeled Faces in the Wild (funneled) as ReDO uses it (Sec. 5.1), and Flowers+LFW, 128x128.

Files under ``root`` (``objdecomp data lfw`` fetches them): ``lfw_funneled/<Name>/<Name>_<NNNN>.jpg``,
the part labels ``parts_lfw_funneled_gt_images/<Name>_<NNNN>.ppm`` (red hair, green face,
blue background) and ReDO's split lists ``train.txt``, ``val.txt``, ``test.txt`` (lines
``<Name> <Name>_<NNNN>``): training on the 10,306 images without part labels, validation on
1,327 and test on 1,600 of the 2,927 labelled ones, identity-disjoint (paper Sec. 5.1).

Mask = hair + face = 1 - blue channel > 0.5, as ReDO's ``1 - seg[2:]``; images and masks are
resized with nearest neighbour (short side 128) and centre-cropped. Training items have no mask.

Flowers+LFW (ReDO Sec. 5.2, "without labels"): the union of both sets per split; ``semantic``
separates the two foregrounds (1 flower, 2 face: 3 classes with background) and ``label`` says
which set an image comes from (0 Flowers, 1 LFW). Training items carry only ``image`` and
``label``, since LFW's training images have no masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from datamodules.base import ObjectDataModule
from datamodules.flowers import FlowersDataModule
from datamodules.real_data import (CorruptFileError, DropKeys, ImageItems, Sample, default_root,
                                   open_image, require)


def lfw_foreground(path: Path) -> np.ndarray:
    """Hair + face: ``1 - blue / 255 > 0.5``."""
    return np.asarray(open_image(path, "RGB"))[..., 2] < 127.5


def read_split(path: Path) -> List[Tuple[str, str]]:
    """The ``(<Name>, <Name>_<NNNN>)`` entries of a ReDO split list."""
    entries = []
    lines = require(path, "lfw", f"ReDO split list {path.name}").read_text().splitlines()
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if parts and (len(parts) != 2 or not parts[1].startswith(parts[0])):
            raise CorruptFileError(f"{path}:{number}: expected '<Name> <Name>_<NNNN>', got {line!r}")
        if parts:
            entries.append((parts[0], parts[1]))
    return entries


class LFWDataModule(ObjectDataModule):
    """LFW funneled with hair+face masks on validation and test (ReDO Table 1).

    Args:
        root: dataset folder (default ``<data root>/lfw``).
        image_size, resample: as :class:`datamodules.flowers.FlowersDataModule`.
        semantic_class: class id of the face in ``semantic`` (1; 2 inside Flowers+LFW).
        batch_size, options: see :class:`ObjectDataModule`.
    """

    dataset_name = "lfw"
    image_size, channels, max_objects, num_classes, num_background = 128, 3, 1, 2, 1

    def __init__(self, root: Optional[str] = None, image_size: int = 128, resample: str = "nearest",
                 semantic_class: int = 1, batch_size: int = 20, **options: Any):
        super().__init__(batch_size, **options)
        self.root = default_root(root, self.dataset_name)
        self.image_size, self.resample, self.semantic_class = image_size, resample, semantic_class

    def samples(self, split: str) -> List[Sample]:
        entries = read_split(self.root / f"{split}.txt")
        images = require(self.root / "lfw_funneled", self.dataset_name, "lfw_funneled/ (lfw-funneled.tgz)")
        parts = self.root / "parts_lfw_funneled_gt_images"
        if split != "train":
            require(parts, self.dataset_name, "parts_lfw_funneled_gt_images/ (part labels)")
        return [Sample(images / name / f"{entry}.jpg", None if split == "train" else parts / f"{entry}.ppm",
                       semantic_class=self.semantic_class) for name, entry in entries]

    def make_dataset(self, split: str) -> Dataset:
        return ImageItems(self.samples(split), self.image_size, foreground=lfw_foreground,
                          crop=True, resample=self.resample)


class _Labelled(Dataset):
    """Adds a constant ``label`` (which source set) to every item."""

    def __init__(self, dataset: Dataset, label: int):
        self.dataset, self.label = dataset, label

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return {**self.dataset[index], "label": torch.tensor(self.label, dtype=torch.int64)}


class FlowersLFWDataModule(ObjectDataModule):
    """Flowers + LFW (ReDO Sec. 5.2): two object categories without labels during training.

    Args:
        flowers_root, lfw_root: the two dataset folders (defaults under the data root).
        image_size, resample: as :class:`datamodules.flowers.FlowersDataModule`.
        batch_size, options: see :class:`ObjectDataModule`.
    """

    dataset_name = "flowers_lfw"
    image_size, channels, max_objects, num_classes, num_background = 128, 3, 1, 3, 1
    num_labels = 2

    def __init__(self, flowers_root: Optional[str] = None, lfw_root: Optional[str] = None,
                 image_size: int = 128, resample: str = "nearest", batch_size: int = 20,
                 **options: Any):
        super().__init__(batch_size, **options)
        self.parts = (FlowersDataModule(flowers_root, image_size, resample, semantic_class=1),
                      LFWDataModule(lfw_root, image_size, resample, semantic_class=2))
        self.image_size = image_size

    def make_dataset(self, split: str) -> Dataset:
        sets = [_Labelled(part.make_dataset(split), label) for label, part in enumerate(self.parts)]
        if split == "train":
            sets = [DropKeys(s, ("mask", "semantic")) for s in sets]
        return ConcatDataset(sets)
