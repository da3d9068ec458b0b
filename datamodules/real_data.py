"""Shared pieces of the real-image datamodules: where a dataset lives, reading and resizing images.

Every real datamodule takes ``root: Optional[str] = None`` (default ``<data root>/<folder>``)
and raises :class:`datamodules.paths.DatasetNotFoundError` naming the missing path and the
``objdecomp data <name>`` command; an unreadable file raises :class:`CorruptFileError` naming it.

Two geometries cover the papers: ``crop`` (short side to ``size`` then a centre crop, as
ReDO's ``Resize(128)`` + ``CenterCrop(128)`` and DTI's Instagram collections) and ``stretch``
(both sides to ``size`` without keeping the aspect, as DTI's ``Resize((H, W))`` for GTSRB and
Weizmann Horse). Masks always use nearest-neighbour resampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from datamodules.paths import DatasetNotFoundError, data_root

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".gif", ".tif", ".tiff", ".webp")
RESAMPLE = {"nearest": InterpolationMode.NEAREST, "bilinear": InterpolationMode.BILINEAR,
            "bicubic": InterpolationMode.BICUBIC}


class CorruptFileError(ValueError):
    """A dataset file exists but cannot be decoded."""


def dti_subset(total: int, size: int, seed: int) -> np.ndarray:
    """``size`` random indices out of ``total`` exactly as DTI-Sprites draws them.

    Its code seeds numpy's global legacy generator and calls ``np.random.choice(range(total),
    size, replace=False)``; a seeded ``RandomState`` gives the same indices.
    """
    return np.random.RandomState(seed).choice(total, min(size, total), replace=False)


def default_root(root: Optional[str], folder: str) -> Path:
    """``root`` if given, else ``<data root>/<folder>``."""
    return Path(root).expanduser() if root is not None else data_root() / folder


def require(path: Path, name: str, what: str = "") -> Path:
    """``path`` if it exists, else :class:`DatasetNotFoundError` for dataset ``name``."""
    if not path.exists():
        raise DatasetNotFoundError(name, path, f"missing {what or path.name}")
    return path


def list_images(folder: Path, recursive: bool = False) -> List[Path]:
    """Image files of ``folder`` sorted by path (the order DTI-Sprites' file listings use)."""
    pattern = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def open_image(path: Path, mode: str = "RGB", labels: bool = False) -> Image.Image:
    """Decode an image file into ``mode``; :class:`CorruptFileError` naming the file if it cannot
    be read (truncated, damaged, not an image).

    Args:
        labels: the file holds label values (entity or class ids, 0/1 masks), which are kept as
            they are; otherwise 16-bit intensities are scaled to 8 bits (:func:`eight_bit`).
    """
    try:
        with Image.open(path) as image:
            return (image if labels else eight_bit(image)).convert(mode)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise CorruptFileError(f"cannot decode image {path}: {error}") from error


def eight_bit(image: Image.Image) -> Image.Image:
    """16-bit greyscale (PNG, TIFF: modes ``I;16*`` and ``I``) scaled to 0..255.

    PIL's own conversion of these modes clips at 255 instead of scaling, which turns nearly every
    pixel white. (16-bit colour PNGs already open as 8-bit ``RGB``/``RGBA``.)
    """
    if not (image.mode.startswith("I;16") or image.mode == "I"):
        return image
    values = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(np.rint(values / 257), 0, 255).astype(np.uint8), "L")


def fit(image: Image.Image, size: int, resample: str = "bilinear", crop: bool = True) -> Image.Image:
    """Resize to ``size`` x ``size``: short side + centre crop (``crop``) or a plain stretch."""
    if crop:
        return TF.center_crop(TF.resize(image, size, interpolation=RESAMPLE[resample]), size)
    return TF.resize(image, [size, size], interpolation=RESAMPLE[resample])


def binary_mask(image: Image.Image) -> np.ndarray:
    """Foreground of a figure/ground mask: > 127 for 0..255 masks, > 0 for 0/1 masks."""
    values = np.asarray(image.convert("L"))
    return values > (127 if values.max() > 1 else 0)


def image_tensor(image: Image.Image) -> torch.Tensor:
    """``[3, H, W]`` float32 in [0, 1]."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div_(255)


@dataclass(frozen=True)
class Sample:
    """One image, optionally its mask file, class label and the semantic class of its foreground."""

    image: Path
    mask: Optional[Path] = None
    label: Optional[int] = None
    semantic_class: int = 1


class ImageItems(Dataset):
    """Items ``image`` [, ``mask`` (0 background, 1 object), ``semantic``] [, ``label``].

    Args:
        samples: the files.
        size: output side.
        foreground: maps a mask file to a boolean foreground array at the file's resolution;
            ``None`` returns no mask.
        crop: geometry (see the module docstring).
        resample: image resampling (``nearest`` in ReDO's code, ``bilinear`` in DTI's).
    """

    def __init__(self, samples: Sequence[Sample], size: int,
                 foreground: Optional[Callable[[Path], np.ndarray]] = None, crop: bool = True,
                 resample: str = "bilinear"):
        self.samples, self.size, self.foreground = list(samples), size, foreground
        self.crop, self.resample = crop, resample

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        sample = self.samples[index]
        item = {"image": image_tensor(fit(open_image(sample.image), self.size, self.resample, self.crop))}
        if self.foreground is not None and sample.mask is not None:
            mask = Image.fromarray(self.foreground(sample.mask).astype(np.uint8) * 255)
            mask = torch.from_numpy(np.asarray(fit(mask, self.size, "nearest", self.crop)) > 127).long()
            item["mask"], item["semantic"] = mask, mask * sample.semantic_class
        if sample.label is not None:
            item["label"] = torch.tensor(sample.label, dtype=torch.int64)
        return item


class DropKeys(Dataset):
    """A view of ``dataset`` without some keys (so that datasets with and without masks concatenate)."""

    def __init__(self, dataset: Dataset, keys: Sequence[str]):
        self.dataset, self.keys = dataset, set(keys)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        return {k: v for k, v in self.dataset[index].items() if k not in self.keys}
