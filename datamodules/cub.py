"""Caltech-UCSD Birds 200-2011 (Wah et al. 2011) as ReDO uses it (Sec. 5.1), 128x128.

Files under ``root`` (``objdecomp data cub`` arranges them): ``images.txt`` (``id path``),
``images/<path>``, ``segmentations/<path with .png>``, ``image_class_labels.txt`` (``id class``)
and ReDO's ``train_val_test_split.txt`` (``id split`` with 0 train, 1 val, 2 test), which gives
the paper's 10,000 training, 788 validation and 1,000 test images.

As in ReDO's code: no bounding-box crop, grey images expanded to RGB, mask = first channel of
the segmentation > 0.5 (the PNGs hold annotator agreement in 0..255), images and masks resized
with nearest neighbour (short side 128) and centre-cropped. Items: ``image``, ``mask``
(0 background, 1 bird), ``semantic`` (same), ``label`` (0..199).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from torch.utils.data import Dataset

from datamodules.base import ObjectDataModule
from datamodules.real_data import CorruptFileError, ImageItems, Sample, default_root, open_image, require

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def cub_foreground(path: Path) -> np.ndarray:
    """First channel > 0.5 of the segmentation (ReDO: ``seg[:1] > .5`` after ``ToTensor``)."""
    return np.asarray(open_image(path, "RGB"))[..., 0] > 127.5


def read_table(path: Path, name: str) -> Dict[int, str]:
    """``{id: value}`` of a two-column CUB text file."""
    table = {}
    for number, line in enumerate(require(path, name).read_text().splitlines(), 1):
        if line.strip():
            parts = line.split(maxsplit=1)
            if len(parts) != 2 or not parts[0].isdigit():
                raise CorruptFileError(f"{path}:{number}: expected '<id> <value>', got {line!r}")
            table[int(parts[0])] = parts[1].strip()
    return table


class CUBDataModule(ObjectDataModule):
    """CUB-200-2011 with foreground masks (ReDO Table 1).

    Args:
        root: the ``CUB_200_2011`` folder with ``segmentations/`` and the split file inside
            (default ``<data root>/cub``).
        image_size, resample: as :class:`datamodules.flowers.FlowersDataModule`.
        batch_size, options: see :class:`ObjectDataModule`.
    """

    dataset_name = "cub"
    image_size, channels, max_objects, num_classes, num_background = 128, 3, 1, 2, 1
    num_labels = 200

    def __init__(self, root: Optional[str] = None, image_size: int = 128, resample: str = "nearest",
                 batch_size: int = 20, **options: Any):
        super().__init__(batch_size, **options)
        self.root = default_root(root, self.dataset_name)
        self.image_size, self.resample = image_size, resample

    def samples(self, split: str) -> List[Sample]:
        paths = read_table(self.root / "images.txt", self.dataset_name)
        splits = read_table(self.root / "train_val_test_split.txt", self.dataset_name)
        labels_file = self.root / "image_class_labels.txt"
        labels = read_table(labels_file, self.dataset_name) if labels_file.is_file() else {}
        require(self.root / "segmentations", self.dataset_name, "segmentations/ (segmentations.tgz)")
        chosen = [i for i in sorted(paths) if int(splits.get(i, -1)) == SPLIT_CODES[split]]
        return [Sample(self.root / "images" / paths[i], self.root / "segmentations" / (paths[i][:-3] + "png"),
                       int(labels[i]) - 1 if i in labels else None) for i in chosen]

    def make_dataset(self, split: str) -> Dataset:
        return ImageItems(self.samples(split), self.image_size, foreground=cub_foreground,
                          crop=True, resample=self.resample)
