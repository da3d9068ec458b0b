"""Textured shape: one textured object on a textured background, with its ground-truth mask.

A procedural single-object set for checking that a foreground/background method (ReDO)
learns within CPU minutes. It is built on ReDO's premise (§3.2): object and background
appearances are independent given the shape, so redrawing either region with a new
texture gives another plausible image, while a wrong mask leaves tell-tale pieces behind.

- Background: two random colours mixed by a smooth, low-frequency field (three random
  plane waves through a sigmoid).
- Object: a star-like blob (radius ``r0 (1 + a cos(k θ + φ))``, stretched and rotated) at a
  random position, filled with high-frequency stripes or a checkerboard in two other
  random colours.
- Items: ``image`` ``[3, S, S]`` in [0, 1]; ``mask`` ``[S, S]`` int64 (0 background,
  1 object); ``count`` 1.

Every item is a function of ``(seed, split, index)`` only; rendering is vectorised over a
batch of items (``__getitems__``, used by the DataLoader), with no per-pixel loops.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.base import ObjectDataModule

_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
NUM_PARAMETERS = 33  # uniform draws per item


def item_parameters(seed: int, split: str, index: int) -> Tensor:
    """The random draws of one item ``[NUM_PARAMETERS]`` in [0, 1), from its own generator."""
    key = ((seed * 1_000_003 + _SPLIT_IDS[split]) * 10_000_019 + index) % (2 ** 63 - 1)
    generator = torch.Generator().manual_seed(key)
    return torch.rand(NUM_PARAMETERS, generator=generator, dtype=torch.float64)


def render(params: Tensor, image_size: int) -> Dict[str, Tensor]:
    """Render items from their parameters ``[N, NUM_PARAMETERS]``.

    Returns ``image`` ``[N, 3, S, S]`` float32 in [0, 1] and ``mask`` ``[N, S, S]`` int64.
    """
    p = params.float()
    axis = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size * 2 - 1
    v, u = torch.meshgrid(axis, axis, indexing="ij")  # y down, x right, both in [-1, 1]

    def col(i: int) -> Tensor:  # parameter i of every item, broadcastable to [N, S, S]
        return p[:, i, None, None]

    def wave(angle: Tensor, freq: Tensor, phase) -> Tensor:
        return torch.sin(freq * (u * torch.cos(angle) + v * torch.sin(angle)) + phase)

    # Background: colours 0 and 1 mixed by a smooth field of three plane waves.
    field = sum(wave(col(w) * math.pi, 1.0 + 2.5 * col(3 + w), col(6 + w) * 2 * math.pi)
                for w in range(3))
    background = _mix(p[:, 9:12], p[:, 12:15], torch.sigmoid(2.0 * field))

    # Object shape: a stretched, rotated star-like blob; covers about 10-35% of the image.
    du, dv = u - (0.7 * col(15) - 0.35), v - (0.7 * col(16) - 0.35)
    rotation, stretch = col(17) * math.pi, 0.75 + 0.55 * col(18)
    a = (du * torch.cos(rotation) + dv * torch.sin(rotation)) / stretch
    b = (dv * torch.cos(rotation) - du * torch.sin(rotation)) * stretch
    lobes = 2 + torch.floor(4 * col(19))  # 2 to 5 lobes
    boundary = (0.38 + 0.25 * col(20)) * (
        1 + 0.3 * col(21) * torch.cos(lobes * torch.atan2(b, a) + 2 * math.pi * col(22)))
    inside = torch.sqrt(a ** 2 + b ** 2) < boundary

    # Object texture: stripes or a checkerboard, 3 to 6 periods across the image.
    angle, freq = col(23) * math.pi, math.pi * (3 + 3 * col(24))
    stripes = wave(angle, freq, 2 * math.pi * col(25))
    pattern = torch.where(col(26) < 0.5, stripes, stripes * wave(angle + math.pi / 2, freq, 0.0))
    obj = _mix(p[:, 27:30], p[:, 30:33], torch.sigmoid(4.0 * pattern))

    image = torch.where(inside[:, None], obj, background)
    return {"image": image.clamp(0, 1).contiguous(), "mask": inside.long()}


def _mix(colour_a: Tensor, colour_b: Tensor, weight: Tensor) -> Tensor:
    """``[N, 3]`` colours blended by ``[N, S, S]`` weights -> ``[N, 3, S, S]``."""
    w = weight[:, None]
    return colour_a[:, :, None, None] * (1 - w) + colour_b[:, :, None, None] * w


class TexturedShapeDataset(Dataset):
    """``size`` items of one split, each rendered from ``(seed, split, index)``."""

    def __init__(self, size: int, image_size: int, seed: int, split: str):
        self.size, self.image_size, self.seed, self.split = size, image_size, seed, split

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Dict[str, Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> List[Dict[str, Tensor]]:
        for index in indices:
            if not 0 <= index < self.size:
                raise IndexError(f"index {index} out of range for {self.size} items")
        params = torch.stack([item_parameters(self.seed, self.split, i) for i in indices])
        batch = render(params, self.image_size)
        count = torch.tensor(1, dtype=torch.int64)
        return [{"image": batch["image"][j], "mask": batch["mask"][j], "count": count}
                for j in range(len(indices))]


class TexturedShapeDataModule(ObjectDataModule):
    """One textured shape on a textured background (procedural; see the module docstring).

    Args:
        image_size: side of the square images.
        train_size, val_size, test_size: items per split.
        batch_size, options: see :class:`ObjectDataModule`.
    """

    dataset_name = "textured_shape"
    channels = 3
    max_objects = 1
    num_classes = 0
    num_background = 1

    def __init__(self, image_size: int = 64, train_size: int = 10000, val_size: int = 500,
                 test_size: int = 500, batch_size: int = 25, **options: Any):
        super().__init__(batch_size, **options)
        self.image_size = image_size
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}

    def make_dataset(self, split: str) -> Dataset:
        return TexturedShapeDataset(self.sizes[split], self.image_size, self.seed, split)
