"""Weizmann Horse (Borenstein & Ullman) for cosegmentation, as DTI-Sprites uses it (Sec. 4.3), 128x128.

Side-view horse photographs with figure/ground masks. Under ``root`` either layout works; images
come in sorted file-name order (as in DTI's code) and each is paired with the mask of the same
stem (DTI's code pairs the two sorted lists by position, which is the same on a complete set; a
missing or extra file would shift every later pair there, and is an error here):

* ``images/*.jpg`` + ``masks/*.png`` (the folder DTI-Sprites' authors published, fetched by
  ``objdecomp data weizmann_horse``);
* ``rgb/*`` + ``figure_ground/*`` (the original archive) or ``horse/*`` + ``mask/*``.

Images are stretched to 128x128 (bilinear, no aspect kept) and masks resized with nearest
neighbour, as DTI's ``Resize((128, 128))``; DTI trains and evaluates on the whole set and
validates on its first 30 images. Items carry ``mask`` (0 background, 1 horse) and
``semantic`` (the same map: one foreground class).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

from torch.utils.data import Dataset

from datamodules.base import ObjectDataModule
from datamodules.paths import DatasetNotFoundError
from datamodules.real_data import (ImageItems, Sample, binary_mask, default_root, list_images,
                                   open_image)

LAYOUTS = (("images", "masks"), ("rgb", "figure_ground"), ("horse", "mask"))


def foreground(path: Path):
    return binary_mask(open_image(path, "L", labels=True))


class WeizmannHorseDataModule(ObjectDataModule):
    """Weizmann Horse with foreground masks (DTI-Sprites Table 4).

    Args:
        root: folder with one of the layouts above (default ``<data root>/weizmann_horse``).
        val_size: the first images used for validation (DTI: 30).
        batch_size, options: see :class:`ObjectDataModule`.
    """

    dataset_name = "weizmann_horse"
    image_size, channels, max_objects, num_classes, num_background = 128, 3, 1, 2, 1

    def __init__(self, root: Optional[str] = None, val_size: int = 30, batch_size: int = 32,
                 **options: Any):
        super().__init__(batch_size, **options)
        self.root = default_root(root, self.dataset_name)
        self.val_size = val_size

    def samples(self) -> List[Sample]:
        for image_dir, mask_dir in LAYOUTS:
            images, masks = list_images(self.root / image_dir), list_images(self.root / mask_dir)
            if images or masks:
                return self.pair_by_stem(images, masks, self.root / mask_dir)
        raise DatasetNotFoundError(self.dataset_name, self.root, "no images/ + masks/ (or rgb/ + "
                                   "figure_ground/, horse/ + mask/) folders")

    def pair_by_stem(self, images: List[Path], masks: List[Path], mask_dir: Path) -> List[Sample]:
        """Each image with the mask of its stem; a missing or extra mask is an error naming it
        (the whole set is evaluated, so skipping an image would change Table 4's data)."""
        by_stem = {m.stem: m for m in masks}
        unmatched = [i for i in images if i.stem not in by_stem]
        if unmatched:
            raise DatasetNotFoundError(self.dataset_name, mask_dir, f"no mask for image {unmatched[0]} "
                                       f"({len(unmatched)} of {len(images)} images have none)")
        extra = sorted(set(by_stem) - {i.stem for i in images})
        if extra:
            raise DatasetNotFoundError(self.dataset_name, mask_dir, f"mask {by_stem[extra[0]]} has no "
                                       f"image ({len(extra)} such masks)")
        return [Sample(i, by_stem[i.stem]) for i in images]

    def make_dataset(self, split: str) -> Dataset:
        samples = self.samples()
        if split == "val":
            samples = samples[:self.val_size]
        return ImageItems(samples, self.image_size, foreground=foreground, crop=False)
