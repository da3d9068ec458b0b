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
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
from torch.utils.data import Dataset

from datamodules.base import ObjectDataModule
from datamodules.real_data import CorruptFileError, ImageItems, Sample, default_root, open_image, require

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def cub_foreground(path: Path) -> np.ndarray:
    """First channel > 0.5 of the segmentation (ReDO: ``seg[:1] > .5`` after ``ToTensor``)."""
    return np.asarray(open_image(path, "RGB"))[..., 0] > 127.5


def read_table(path: Path, name: str, parse: Callable[[str], Any] = str) -> Dict[int, Any]:
    """``{id: parse(value)}`` of a two-column CUB text file; a malformed line, a value ``parse``
    rejects (ValueError) or a repeated id is a :class:`CorruptFileError` naming file and line."""
    table = {}
    for number, line in enumerate(require(path, name).read_text().splitlines(), 1):
        if line.strip():
            parts = line.split(maxsplit=1)
            if len(parts) != 2 or not parts[0].isdigit():
                raise CorruptFileError(f"{path}:{number}: expected '<id> <value>', got {line!r}")
            if int(parts[0]) in table:
                raise CorruptFileError(f"{path}:{number}: image id {parts[0]} appears twice")
            try:
                table[int(parts[0])] = parse(parts[1].strip())
            except ValueError as error:
                raise CorruptFileError(f"{path}:{number}: {error} in {line!r}") from error
    return table


def choice_of(allowed: Sequence[int], what: str) -> Callable[[str], int]:
    """A parser of integers in ``allowed`` (ValueError otherwise)."""
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) not in allowed:
            raise ValueError(f"{what} must be one of {allowed[0]}..{allowed[-1]}, got {text!r}")
        return int(text)
    return parse


def every_image(table: Dict[int, Any], paths: Dict[int, str], path: Path) -> Dict[int, Any]:
    """``table`` if it has a row for every image of ``images.txt``, else a :class:`CorruptFileError`
    (a silently missing row would drop that image from its split)."""
    missing = [i for i in sorted(paths) if i not in table]
    if missing:
        raise CorruptFileError(f"{path}: no row for image id {missing[0]} ({paths[missing[0]]}); "
                               f"{len(missing)} of the {len(paths)} images of images.txt have none")
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
        split_file = self.root / "train_val_test_split.txt"
        split_code = choice_of(sorted(SPLIT_CODES.values()), "the split code")
        splits = every_image(read_table(split_file, self.dataset_name, split_code), paths, split_file)
        labels_file = self.root / "image_class_labels.txt"
        labels = {}
        if labels_file.is_file():
            label = choice_of(range(1, self.num_labels + 1), "the class label")
            labels = every_image(read_table(labels_file, self.dataset_name, label), paths, labels_file)
        require(self.root / "segmentations", self.dataset_name, "segmentations/ (segmentations.tgz)")
        chosen = [i for i in sorted(paths) if splits[i] == SPLIT_CODES[split]]
        return [Sample(self.root / "images" / paths[i], self.root / "segmentations" / (paths[i][:-3] + "png"),
                       labels[i] - 1 if labels else None) for i in chosen]

    def make_dataset(self, split: str) -> Dataset:
        return ImageItems(self.samples(split), self.image_size, foreground=cub_foreground,
                          crop=True, resample=self.resample)
