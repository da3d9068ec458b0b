"""Oxford 102 Flowers (Nilsback & Zisserman 2008) as ReDO uses it (Sec. 5.1), 128x128.

Files under ``root`` (``objdecomp data flowers`` fetches them): ``jpg/image_%05d.jpg``,
``segmim/segmim_%05d.jpg`` (the automatic segmentations, background painted blue),
``setid.mat`` (``trnid``/``valid``/``tstid``) and, for labels, ``imagelabels.mat``.

ReDO's protocol: 6,149 training, 1,020 validation and 1,020 test images, which
its code obtains by swapping the official lists: train = ``tstid``, val = ``valid``, test =
``trnid``. Foreground = NOT(R == 0 or G == 0 or B == 254) on the segmentation JPEG, computed at
full resolution. Images and masks are resized (short side 128, nearest neighbour, as ReDO's
``Resize(128, Image.NEAREST)``) and centre-cropped. Items: ``image``, ``mask`` (0 background,
1 flower), ``semantic`` (same), and ``label`` (0..101) when ``imagelabels.mat`` is present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import numpy as np
from torch.utils.data import Dataset

from datamodules.base import ObjectDataModule
from datamodules.real_data import CorruptFileError, ImageItems, Sample, default_root, open_image, require

SPLIT_KEYS = {"train": "tstid", "val": "valid", "test": "trnid"}  # ReDO's swap of the official lists


def flowers_foreground(path: Path) -> np.ndarray:
    """ReDO's rule on ``segmim`` JPEGs: background where R == 0, G == 0 or B == 254."""
    rgb = np.asarray(open_image(path, "RGB"))
    return ~((rgb[..., 0] == 0) | (rgb[..., 1] == 0) | (rgb[..., 2] == 254))


def load_mat(path: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat

    try:
        return np.asarray(loadmat(path)[key]).reshape(-1).astype(np.int64)
    except KeyError as error:
        raise CorruptFileError(f"{path} has no '{key}'") from error
    except Exception as error:  # scipy raises several types for a damaged file
        raise CorruptFileError(f"cannot read {path}: {error}") from error


class FlowersDataModule(ObjectDataModule):
    """Flowers with foreground masks (ReDO Table 1).

    Args:
        root: dataset folder (default ``<data root>/flowers``).
        image_size: output side (ReDO: 128).
        resample: image resampling (ReDO's code: ``nearest``).
        semantic_class: class id of the foreground in ``semantic`` (1; 2 in Flowers+LFW's faces).
        batch_size, options: see :class:`ObjectDataModule`.
    """

    dataset_name = "flowers"
    image_size, channels, max_objects, num_classes, num_background = 128, 3, 1, 2, 1
    num_labels = 102

    def __init__(self, root: Optional[str] = None, image_size: int = 128, resample: str = "nearest",
                 semantic_class: int = 1, batch_size: int = 20, **options: Any):
        super().__init__(batch_size, **options)
        self.root = default_root(root, self.dataset_name)
        self.image_size, self.resample, self.semantic_class = image_size, resample, semantic_class

    def samples(self, split: str) -> List[Sample]:
        ids = load_mat(require(self.root / "setid.mat", self.dataset_name), SPLIT_KEYS[split])
        require(self.root / "jpg", self.dataset_name, "jpg/ (102flowers.tgz)")
        require(self.root / "segmim", self.dataset_name, "segmim/ (102segmentations.tgz)")
        labels_file = self.root / "imagelabels.mat"
        labels = load_mat(labels_file, "labels") - 1 if labels_file.is_file() else None
        if labels is not None and len(labels) < ids.max(initial=0):
            raise CorruptFileError(f"{labels_file} holds {len(labels)} labels, but setid.mat names "
                                   f"image {ids.max()}; the file is short or from another dataset")
        return [Sample(self.root / "jpg" / f"image_{i:05d}.jpg", self.root / "segmim" / f"segmim_{i:05d}.jpg",
                       None if labels is None else int(labels[i - 1]), self.semantic_class) for i in ids]

    def make_dataset(self, split: str) -> Dataset:
        return ImageItems(self.samples(split), self.image_size, foreground=flowers_foreground,
                          crop=True, resample=self.resample)
