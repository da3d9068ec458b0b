"""LAVAE's multi-MNIST (§3.1): binarised digits scattered without overlap on a black 64x64 canvas.

Digits are rescaled from 28x28 to 15x15 by bilinear interpolation and binarised by rounding,
then 0-3 of them (drawn from a pool of the first 1k or 10k MNIST training digits:
``multi_mnist_1k``, ``multi_mnist_10k``) are placed at random, avoiding overlaps, inside the
canvas. 200k images: 190k for training, 10k held out; a further 10k test images hold 7 digits
each. The data are 1-channel and binary (LAVAE models each pixel as a Bernoulli variable).

Deliberate choices: the bilinear downscaling is antialiased (as the authors' resize was);
digits keep their tight bounding boxes apart (the rule we also use for LAVAE's dSprites, see
multi_dsprites.py); semantic classes are the digit labels + 1 (K = 11 with background).
Digits come from :mod:`datamodules.mnist_source` (MNIST IDX files, or the logged stand-in).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional, Tuple

import torch
from torch import Tensor

from datamodules.mnist_source import binarised, load_digits, mnist_source
from datamodules.procedural import (ProceduralDataModule, Random, Scene, finish_scene,
                                    paste_windows)
from datamodules.shapes import place_boxes, tight_boxes


@lru_cache(maxsize=4)
def digit_pool(pool_size: int, patch: int, source: str) -> Tuple[Tensor, Tensor]:
    """The first ``pool_size`` training digits, binarised at ``patch`` pixels, and their labels."""
    images, labels = load_digits("train", source)
    return binarised(images[:pool_size], patch), labels[:pool_size]


@dataclass(frozen=True)
class MultiMNISTRenderer:
    """Scatters 0-3 (or a fixed number of) pool digits on a black canvas without overlap."""

    pool_size: int
    source: str
    min_objects: int = 0
    max_objects: int = 3
    size: int = 64
    patch: int = 15
    candidates: int = 64

    def __call__(self, rng: Random) -> Scene:
        digits, labels = digit_pool(self.pool_size, self.patch, self.source)
        n, k = len(rng), self.max_objects
        count = rng.integers(self.min_objects, self.max_objects + 1)
        active = torch.arange(k) < count[:, None]
        index = rng.integers(0, len(digits), k)
        windows = digits[index]
        limits = torch.full((n, k, 2), self.size - self.patch + 1)  # digits lie inside
        origins, placed = place_boxes(rng, tight_boxes(windows), active, limits, self.candidates)
        ids = paste_windows(windows, origins, active, self.size)
        palette = torch.tensor([0] + [255] * k, dtype=torch.uint8).expand(n, k + 1)[..., None]
        classes = torch.cat([torch.zeros(n, 1, dtype=torch.int64), labels[index] + 1], 1)
        return finish_scene(ids, palette, classes, active, ok=placed)


class MultiMNISTDataModule(ProceduralDataModule):
    """Multi-MNIST of LAVAE §3.1 (subclasses fix the digit pool: 1k or 10k digits).

    Args:
        train_size: training images (190k).
        val_size: held-out images with 0-3 digits (10k).
        test_size: test images (10k).
        test_objects: digits per test image (7, the generalisation test); ``None`` draws the
            test split like the training split.
        image_size: canvas side (64 in the paper; smaller canvases are CPU-sized variants).
        patch: digit patch side (15 in the paper); by default 15/64 of the canvas (odd).
        eval_on_train: evaluate on the first training images instead of disjoint splits.
        cache_dir: optional uint8 on-disk cache of the rendered splits.
        batch_size, options: see :class:`ObjectDataModule`; its ``seed`` also seeds
            generation.
    """

    pool_size = 0
    image_size, channels, num_classes, num_background = 64, 1, 11, 1

    def __init__(self, train_size: int = 190_000, val_size: int = 10_000,
                 test_size: int = 10_000, test_objects: Optional[int] = 7,
                 eval_on_train: bool = False, cache_dir: Optional[str] = None,
                 batch_size: int = 64, image_size: int = 64, patch: Optional[int] = None,
                 **options: Any):
        super().__init__(train_size, val_size, test_size, eval_on_train, cache_dir,
                         batch_size, **options)
        self.test_objects = test_objects
        self.max_objects = max(3, test_objects or 0)
        self.image_size = image_size
        self.patch = patch if patch is not None else (15 * image_size // 64) | 1
        self.source = mnist_source()

    def renderer(self, split: str) -> MultiMNISTRenderer:
        if split == "test" and self.test_objects is not None:
            return MultiMNISTRenderer(self.pool_size, self.source, self.test_objects,
                                      self.test_objects, self.image_size, self.patch)
        return MultiMNISTRenderer(self.pool_size, self.source, size=self.image_size,
                                  patch=self.patch)


class MultiMNIST1kDataModule(MultiMNISTDataModule):
    __doc__ = MultiMNISTDataModule.__doc__.replace("subclasses fix the digit pool: 1k or 10k",
                                                   "a pool of the first 1k training")
    dataset_name = "multi_mnist_1k"
    pool_size = 1_000


class MultiMNIST10kDataModule(MultiMNISTDataModule):
    __doc__ = MultiMNISTDataModule.__doc__.replace("subclasses fix the digit pool: 1k or 10k",
                                                   "a pool of the first 10k training")
    dataset_name = "multi_mnist_10k"
    pool_size = 10_000
