"""DeepMind multi-object benchmarks: Multi-dSprites, Tetrominoes, CLEVR6 and Objects Room.

The sources are sequential (GZIP TFRecords), so
``objdecomp data <name>`` converts one of them once into a random-access cache of uint8
``.npy`` files (datamodules/deepmind_prepare.py), and these datamodules memory-map it:

    <data root>/<name>/<cache>/image.npy     [N, H, W, 3]
                               mask.npy      [N, H, W]  entity ids, 0..num_background-1 = background
                               semantic.npy  [N, H, W]  class ids, 0 = background (sets with classes)
                               count.npy     [N]        foreground entities visible in the image
                               meta.json     written last: its presence marks a complete cache

``<cache>`` names the source, so two definitions of one benchmark never mix:
``deepmind`` (official TFRecords), ``ocl`` (object-centric-library HDF5 repackaging) or
``dti`` (the PNG folders DTI-Sprites' authors published); Multi-dSprites adds the variant,
e.g. ``deepmind-colored_on_grayscale``. What each cache holds is in its ``meta.json``
(``definition``) and in the table of datamodules/deepmind_prepare.py.

Splits follow DTI-Sprites' code (its unsupervised protocol): train on all
N images, validate on 100 random ones (numpy seed 42), test on the first 320, which are
training images too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.base import ObjectDataModule
from datamodules.paths import DatasetNotFoundError, data_root
from datamodules.real_data import dti_subset

CACHE_VERSION = 1


@dataclass(frozen=True)
class MultiObjectSpec:
    """On-disk layout and facts of one benchmark.

    Attributes:
        raw_size: ``(H, W)`` of the TFRecord images.
        entities: mask channels K in the TFRecord (background entities included).
        mask_layout: ``"KHW"`` (masks stored [K, H, W, 1]) or ``"HWK"`` (Multi-dSprites: [H, W, K, 1]).
        image_size: side of the prepared square images.
        num_background, max_objects, num_classes: the datamodule facts (classes incl. background).
        class_features: per-entity features whose values define an object's semantic class.
    """

    raw_size: Tuple[int, int]
    entities: int
    mask_layout: str
    image_size: int
    num_background: int
    max_objects: int
    num_classes: int
    class_features: Tuple[str, ...]


SPECS: Dict[str, MultiObjectSpec] = {
    # 19 shapes/rotations (the README says 17; DTI uses 20 classes with background).
    "tetrominoes": MultiObjectSpec((35, 35), 4, "KHW", 35, 1, 3, 20, ("shape",)),
    # Ellipse, heart, square + background: DTI's 4 classes.
    "colored_on_grayscale": MultiObjectSpec((64, 64), 6, "HWK", 64, 1, 5, 4, ("shape",)),
    "colored_on_colored": MultiObjectSpec((64, 64), 5, "HWK", 64, 1, 4, 4, ("shape",)),
    # 3 shapes x 2 materials + background: DTI's 7 classes.
    "clevr6": MultiObjectSpec((240, 320), 11, "KHW", 128, 1, 6, 7, ("shape", "material")),
    # Sky, floor and two wall halves are the 4 background entities; no classes.
    "objects_room": MultiObjectSpec((64, 64), 7, "KHW", 64, 4, 3, 0, ()),
}


def read_meta(directory: Path, name: str, command: str) -> dict:
    """The ``meta.json`` of a prepared cache; :class:`DatasetNotFoundError` naming ``command`` when absent."""
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise DatasetNotFoundError(name, directory, f"no prepared cache (meta.json missing); `{command}`")
    meta = json.loads(meta_path.read_text())
    if meta.get("version") != CACHE_VERSION:
        raise DatasetNotFoundError(name, directory, f"cache version {meta.get('version')} != "
                                   f"{CACHE_VERSION}; re-run `{command}`")
    return meta


class PreparedScenes(Dataset):
    """Items of a prepared cache, memory-mapped lazily (so DataLoader workers open their own maps).

    Args:
        directory: the cache folder.
        indices: which images of the cache this split holds.
        semantic: return ``semantic`` (the cache has ``semantic.npy``).
    """

    def __init__(self, directory: Path, indices: np.ndarray, semantic: bool):
        self.directory, self.indices, self.semantic = Path(directory), np.asarray(indices), semantic
        self._arrays: Optional[Dict[str, np.ndarray]] = None

    def __len__(self) -> int:
        return len(self.indices)

    def _open(self) -> Dict[str, np.ndarray]:
        if self._arrays is None:
            names = ("image", "mask", "count") + (("semantic",) if self.semantic else ())
            self._arrays = {n: np.load(self.directory / f"{n}.npy", mmap_mode="r") for n in names}
        return self._arrays

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        arrays, i = self._open(), int(self.indices[index])
        item = {
            "image": torch.from_numpy(np.array(arrays["image"][i])).permute(2, 0, 1).float().div_(255),
            "mask": torch.from_numpy(arrays["mask"][i].astype(np.int64)),
            "count": torch.tensor(int(arrays["count"][i]), dtype=torch.int64),
        }
        if self.semantic:
            item["semantic"] = torch.from_numpy(arrays["semantic"][i].astype(np.int64))
        return item

    def __getstate__(self):  # never pickle open memory maps into workers
        return {**self.__dict__, "_arrays": None}


class DeepMindDataModule(ObjectDataModule):
    """Shared loader of the prepared multi-object caches (see the module docstring).

    Args:
        root: the benchmark folder (default: ``<data root>/<dataset_name>``).
        source: which prepared cache to read: ``deepmind``, ``ocl`` or ``dti``.
        val_size: random validation images (DTI: 100, numpy seed 42).
        test_size: the first images, evaluated (DTI: 320).
        train_size: use only the first ``train_size`` images for training (default: all).
        batch_size, options: see :class:`ObjectDataModule`.
    """

    spec_key: ClassVar[str] = "tetrominoes"
    sources: ClassVar[Tuple[str, ...]] = ("deepmind", "ocl", "dti")

    def __init_subclass__(cls, **kwargs):
        # Facts as class attributes, derived from the spec so they are stated once.
        super().__init_subclass__(**kwargs)
        spec = SPECS[cls.spec_key]
        cls.image_size, cls.channels, cls.max_objects = spec.image_size, 3, spec.max_objects
        cls.num_classes, cls.num_background = spec.num_classes, spec.num_background

    def __init__(self, root: Optional[str] = None, source: str = "deepmind", val_size: int = 100,
                 test_size: int = 320, train_size: Optional[int] = None, batch_size: int = 32,
                 **options: Any):
        super().__init__(batch_size, **options)
        if source not in self.sources:
            raise ValueError(f"{self.dataset_name}: unknown source {source!r}; one of {self.sources}")
        self.root = Path(root) if root is not None else data_root() / self.dataset_name
        self.source, self.val_size, self.test_size, self.train_size = source, val_size, test_size, train_size
        self.spec = SPECS[self.spec_key]
        self.max_objects = self.spec.max_objects  # varies with the Multi-dSprites variant

    @property
    def cache_dir(self) -> Path:
        return self.root / self.source

    @property
    def prepare_command(self) -> str:
        return f"objdecomp data {self.dataset_name} --source {self.source}"

    def make_dataset(self, split: str) -> Dataset:
        meta = read_meta(self.cache_dir, self.dataset_name, self.prepare_command)
        if meta["image_size"] != self.image_size or meta["spec"] != self.spec_key:
            raise ValueError(f"{self.cache_dir} holds '{meta['spec']}' at {meta['image_size']} px, "
                             f"not '{self.spec_key}' at {self.image_size} px")
        total = meta["num_images"]
        if split == "train":
            indices = np.arange(min(total, self.train_size or total))
        elif split == "val":
            indices = dti_subset(total, self.val_size, seed=42)
        else:
            indices = np.arange(min(total, self.test_size))
        return PreparedScenes(self.cache_dir, indices, semantic=self.num_classes > 0)


class DeepMindMultiDSpritesDataModule(DeepMindDataModule):
    """Multi-dSprites (Burgess et al. 2019 / Kabra et al. 2019), 64x64.

    Args:
        variant: ``colored_on_grayscale`` (2-5 sprites on grey; DTI's ``dsprites_gray``, the
            default) or ``colored_on_colored`` (1-4 sprites, only from the ``deepmind`` source).
        root, source, ...: see :class:`DeepMindDataModule`.
    """

    dataset_name = "deepmind_multi_dsprites"
    spec_key = "colored_on_grayscale"

    def __init__(self, root: Optional[str] = None, source: str = "deepmind",
                 variant: str = "colored_on_grayscale", val_size: int = 100, test_size: int = 320,
                 train_size: Optional[int] = None, batch_size: int = 32,
                 **options: Any):
        if variant not in ("colored_on_grayscale", "colored_on_colored"):
            raise ValueError(f"unknown Multi-dSprites variant {variant!r}")
        self.spec_key, self.variant = variant, variant
        super().__init__(root, source, val_size, test_size, train_size, batch_size, **options)

    @property
    def cache_dir(self) -> Path:
        return self.root / f"{self.source}-{self.variant}"

    @property
    def prepare_command(self) -> str:
        return f"{super().prepare_command} --variant {self.variant}"


class DeepMindTetrominoesDataModule(DeepMindDataModule):
    """Tetrominoes (Greff et al. 2019), 35x35, three pieces of 19 shapes/rotations."""

    dataset_name = "deepmind_tetrominoes"
    spec_key = "tetrominoes"


class CLEVR6DataModule(DeepMindDataModule):
    """CLEVR6: CLEVR-with-masks scenes of at most 6 objects, 128x128 (definitions per source in
    datamodules/deepmind_prepare.py; the ``deepmind`` cache is ours, ``dti`` the authors' 34,963)."""

    dataset_name = "clevr6"
    spec_key = "clevr6"


class ObjectsRoomDataModule(DeepMindDataModule):
    """Objects Room (Burgess et al. 2019), 64x64; 4 background entities (sky, floor, 2 walls)."""

    dataset_name = "objects_room"
    spec_key = "objects_room"
    sources = ("deepmind",)  # see datamodules/deepmind_prepare.py on the OCL copy
