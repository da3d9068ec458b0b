"""ReDO's colored-2-MNIST (§5.1): one even and one odd coloured digit on a uniform background.

The paper: "a uniform background on which we draw two colored MNIST numbers: one odd number
and one even number. Odd and even numbers have colors sampled from different distributions",
with n = 3 regions. The authors' code settles the rest, which we follow:
digits resized to 56 px and thresholded, at random positions on a 128x128 canvas in random
stacking order (a smaller ``image_size`` scales the digits with the canvas); the even digit's colour has R and G = B uniform in [0, 0.33], the odd
digit's R = B and G uniform in [0.66, 1], the background's R = G and B uniform in
[0.33, 0.66].

Ground truth: ``mask`` ids follow the stacking order (1 = the digit behind), ``semantic`` is
the region: 1 = even digit, 2 = odd digit (K = 3 with background). Training images use
MNIST's training digits, validation and test images its test digits. A draw in which the
front digit hides the other entirely is redrawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional, Tuple

import torch
from torch import Tensor

from datamodules.mnist_source import binarised, load_digits, mnist_source
from datamodules.procedural import (ProceduralDataModule, Random, Scene, finish_scene,
                                    paste_windows, quantize)


@lru_cache(maxsize=4)
def parity_pools(split: str, patch: int, source: str) -> Tuple[Tensor, Tensor]:
    """Binarised ``patch``-pixel digits of MNIST's ``split``: (even digits, odd digits)."""
    images, labels = load_digits(split, source)
    digits = binarised(images, patch)
    return digits[labels % 2 == 0], digits[labels % 2 == 1]


@dataclass(frozen=True)
class ColoredMNISTRenderer:
    """Two digits of opposite parity, each with its parity's colour law, on a uniform colour."""

    digits: str  # which MNIST split the digits come from: "train" or "test"
    source: str
    size: int = 128
    patch: int = 56

    def __call__(self, rng: Random) -> Scene:
        even, odd = parity_pools(self.digits, self.patch, self.source)
        n = len(rng)
        windows = torch.stack([even[rng.integers(0, len(even))],
                               odd[rng.integers(0, len(odd))]], 1)  # [N, 2, p, p]
        origins = rng.integers(0, self.size - self.patch + 1, 2, 2)
        low, high = rng.uniform(3, low=0.0, high=0.33), rng.uniform(3, low=0.66, high=1.0)
        middle = rng.uniform(2, low=0.33, high=0.66)
        colours = torch.stack([
            torch.stack([middle[:, 0], middle[:, 0], middle[:, 1]], -1),  # background, R = G
            torch.stack([low[:, 0], low[:, 1], low[:, 1]], -1),  # even digit, G = B
            torch.stack([high[:, 0], high[:, 1], high[:, 0]], -1),  # odd digit, R = B
        ], 1)
        classes = torch.tensor([0, 1, 2]).expand(n, 3)
        # Random stacking: swap the two digits (their windows, places, colours and classes)
        # in half of the images, so that id 2 is always the digit in front.
        swap = rng.integers(0, 2).bool()
        order = torch.where(swap[:, None], torch.tensor([1, 0]), torch.tensor([0, 1]))
        windows = windows[torch.arange(n)[:, None], order]
        origins = origins[torch.arange(n)[:, None], order]
        entries = torch.cat([torch.zeros(n, 1, dtype=torch.int64), order + 1], 1)
        colours = colours.gather(1, entries[..., None].expand(-1, -1, 3))
        classes = classes.gather(1, entries)
        active = torch.ones(n, 2, dtype=torch.bool)
        ids = paste_windows(windows, origins, active, self.size)
        return finish_scene(ids, quantize(colours), classes, active)


class ColoredMNISTDataModule(ProceduralDataModule):
    """colored-2-MNIST (ReDO §5.1): 128x128, an even and an odd digit, 3 regions.

    Args:
        image_size: canvas side (the paper: 128); digits keep 56/128 of it.
        train_size: training images (the paper gives no size; MNIST's 60k by default).
        val_size: validation images.
        test_size: test images.
        eval_on_train: evaluate on the first training images instead of disjoint splits.
        cache_dir: optional uint8 on-disk cache of the rendered splits.
        batch_size, options: see :class:`ObjectDataModule`; its ``seed`` also seeds
            generation.
    """

    dataset_name = "colored_mnist"
    image_size, channels, max_objects, num_classes, num_background = 128, 3, 2, 3, 1

    def __init__(self, image_size: int = 128, train_size: int = 60_000, val_size: int = 1_000, test_size: int = 10_000,
                 eval_on_train: bool = False, cache_dir: Optional[str] = None,
                 batch_size: int = 25, **options: Any):
        super().__init__(train_size, val_size, test_size, eval_on_train, cache_dir,
                         batch_size, **options)
        self.image_size = image_size
        self.digit_size = round(56 * image_size / 128)
        self.source = mnist_source()

    def renderer(self, split: str) -> ColoredMNISTRenderer:
        return ColoredMNISTRenderer("train" if split == "train" else "test", self.source,
                                    self.image_size, self.digit_size)
