"""GTSRB-8 (DTI-Sprites Sec. 4.2): a balanced 8-class subset of the GTSRB training set, 28x28.

DTI-Sprites keeps the classes with 1,000 to 1,500 training images, [3, 7, 9, 11, 17, 18, 25,
35], remapped to labels 0-7 in that order (10,650 images), and trains and evaluates on the
whole filtered set; validation is 100 random images (numpy seed 46), as in its code.

On disk, any of these layouts under ``root`` (a folder ``000NN`` or ``NN`` per class):

* ``GTSRB/Final_Training/Images/000NN/*.ppm`` + ``GT-000NN.csv`` (the official
  ``GTSRB_Final_Training_Images.zip``, fetched by ``objdecomp data gtsrb8``);
* ``GTSRB/Training/000NN/`` (the official ``GTSRB-Training_fixed.zip``);
* ``GTSRB/train/NN/`` (the folder DTI-Sprites' authors published).

Images are stretched to 28x28 (bilinear) like DTI's ``Resize((28, 28))`` of the whole file.
``crop_roi=True`` first crops the sign's bounding box from ``GT-000NN.csv`` (``Roi.X1``..
``Roi.Y2``, as ``image[y1:y2, x1:x2]``), a deviation offered for comparison only.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch.utils.data import Dataset

from datamodules.base import ObjectDataModule
from datamodules.paths import DatasetNotFoundError
from datamodules.real_data import (ImageItems, Sample, default_root, dti_subset, fit, image_tensor,
                                   list_images, open_image)

LAYOUTS = ("GTSRB/Final_Training/Images", "Final_Training/Images", "GTSRB/Training", "Training",
           "GTSRB/train", "train")


class GTSRB8DataModule(ObjectDataModule):
    """GTSRB-8 with class labels (DTI-Sprites Table 3).

    Args:
        root: folder holding one of the layouts above (default ``<data root>/gtsrb8``).
        crop_roi: crop the annotated sign box before resizing (not DTI's protocol).
        val_size: random validation images (DTI: 100, seed 46).
        batch_size, options: see :class:`ObjectDataModule`.
    """

    dataset_name = "gtsrb8"
    image_size, channels, max_objects, num_classes, num_background = 28, 3, 1, 0, 1
    classes = (3, 7, 9, 11, 17, 18, 25, 35)  # GTSRB class ids kept, in label order
    num_labels = len(classes)

    def __init__(self, root: Optional[str] = None, crop_roi: bool = False, val_size: int = 100,
                 batch_size: int = 128, **options: Any):
        super().__init__(batch_size, **options)
        self.root = default_root(root, self.dataset_name)
        self.crop_roi, self.val_size = crop_roi, val_size

    def class_folders(self) -> Dict[int, Path]:
        """GTSRB class id -> folder of its images, for the first layout found under ``root``."""
        for layout in LAYOUTS:
            folder = self.root / layout
            if folder.is_dir():
                found = {int(d.name): d for d in folder.iterdir() if d.is_dir() and d.name.isdigit()}
                if found:
                    return found
        raise DatasetNotFoundError(self.dataset_name, self.root,
                                   "no class folders under any of " + ", ".join(LAYOUTS))

    def samples(self) -> List[Sample]:
        folders = self.class_folders()
        missing = [c for c in self.classes if c not in folders]
        if missing:
            raise DatasetNotFoundError(self.dataset_name, self.root, f"no folders for classes {missing}")
        images = {c: list_images(folders[c]) for c in self.classes}
        empty = [folders[c] for c in self.classes if not images[c]]
        if empty:  # without this the labels would silently cover 7 classes
            raise DatasetNotFoundError(self.dataset_name, empty[0], f"class folder {empty[0].name} "
                                       "holds no images; GTSRB-8 needs all 8 classes")
        return [Sample(path, label=label) for label, c in enumerate(self.classes) for path in images[c]]

    def make_dataset(self, split: str) -> Dataset:
        samples = self.samples()
        if split == "val":
            samples = [samples[i] for i in dti_subset(len(samples), self.val_size, seed=46)]
        if not self.crop_roi:
            return ImageItems(samples, self.image_size, crop=False)
        return RoiItems(samples, self.image_size, read_rois(self.class_folders()))


def read_rois(folders: Dict[int, Path]) -> Dict[Path, Tuple[int, int, int, int]]:
    """Sign boxes from ``GT-000NN.csv`` (``Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId``)."""
    boxes = {}
    for folder in folders.values():
        for table in folder.glob("GT-*.csv"):
            with open(table, newline="") as handle:
                for row in csv.DictReader(handle, delimiter=";"):
                    boxes[folder / row["Filename"]] = tuple(
                        int(row[k]) for k in ("Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2"))
    return boxes


class RoiItems(ImageItems):
    """:class:`ImageItems` that crop each image to its annotated sign box before resizing."""

    def __init__(self, samples, size: int, boxes: Dict[Path, Tuple[int, int, int, int]]):
        missing = [s.image for s in samples if s.image not in boxes]
        if missing:
            raise DatasetNotFoundError("gtsrb8", missing[0].parent, "no GT-000NN.csv row for "
                                       f"{missing[0].name} (crop_roi needs the official annotations)")
        super().__init__(samples, size, crop=False)
        self.boxes = boxes

    def __getitem__(self, index: int):
        sample = self.samples[index]
        image = open_image(sample.image).crop(self.boxes[sample.image])
        return {"image": image_tensor(fit(image, self.size, "bilinear", crop=False)),
                "label": torch.tensor(sample.label, dtype=torch.int64)}
