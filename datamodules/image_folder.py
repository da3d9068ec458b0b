"""Any folder of images, e.g. DTI-Sprites' Instagram collections (Sec. 4.4), 128x128.

Images are resized so that their short side is ``image_size`` (bilinear), then centre-cropped.
When ``root`` holds no images itself but two or more sub-folders of images, each sub-folder is a
class and items get a ``label`` (its index in sorted order); otherwise images are collected
recursively and items carry only ``image``. Every image is used for training and testing;
validation is 100 random images (numpy seed 46).

Default ``root``: ``<data root>/image_folder/<collection>``, where ``objdecomp data image_folder
--source santaphoto`` (or ``weddingkiss``) puts the collections DTI-Sprites' authors published.
"""

from __future__ import annotations

from typing import Any, List, Optional

from torch.utils.data import Dataset

from datamodules.base import ObjectDataModule
from datamodules.paths import DatasetNotFoundError
from datamodules.real_data import ImageItems, Sample, default_root, dti_subset, list_images, require


class ImageFolderDataModule(ObjectDataModule):
    """Unlabelled (or folder-labelled) real images without ground-truth masks.

    Args:
        root: the image folder (default ``<data root>/image_folder/<collection>``).
        collection: sub-folder of the default root (the Instagram hashtag).
        image_size: output side (DTI: 128).
        val_size: random validation images.
        batch_size, options: see :class:`ObjectDataModule`.
    """

    dataset_name = "image_folder"
    image_size, channels, max_objects, num_classes, num_background = 128, 3, 1, 0, 1

    def __init__(self, root: Optional[str] = None, collection: str = "santaphoto",
                 image_size: int = 128, val_size: int = 100, batch_size: int = 32,
                 **options: Any):
        super().__init__(batch_size, **options)
        self.root = default_root(root, f"{self.dataset_name}/{collection}")
        self.image_size, self.val_size, self.collection = image_size, val_size, collection

    def samples(self) -> List[Sample]:
        folder = require(self.root, self.dataset_name, "image folder (the Instagram collections: "
                         f"`objdecomp data image_folder --source {self.collection}`)")
        classes = sorted(d for d in folder.iterdir() if d.is_dir() and list_images(d, recursive=True))
        if not list_images(folder) and len(classes) >= 2:
            return [Sample(path, label=label) for label, d in enumerate(classes)
                    for path in list_images(d, recursive=True)]
        samples = [Sample(path) for path in list_images(folder, recursive=True)]
        if not samples:
            raise DatasetNotFoundError(self.dataset_name, folder, "no image files")
        return samples

    def make_dataset(self, split: str) -> Dataset:
        samples = self.samples()
        if split == "val":
            samples = [samples[i] for i in dti_subset(len(samples), self.val_size, seed=46)]
        return ImageItems(samples, self.image_size, crop=True, resample="bilinear")
