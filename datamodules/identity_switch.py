"""Identity-switching sequences of CIS Table 2: an ellipse and a square moved over a 9x9 grid.

CIS §4.3 trains a segmentation network on two-object Multi-Texture scenes and then counts how
often an object changes output channel along "sample sequences with varying positions and
occlusions". The authors' generator (its ``PC`` mode) fixes the objects: the
ellipse (drawn first, so in front) and the square, each offset from the centre by one of
9 values per axis (0, +-6, +-12, +-18, +-24 px).

* ``train``: such two-object scenes at random grid positions with random hue shifts (the
  distribution the network of the identity experiment is trained on).
* ``val`` / ``test``: the sequence, frames enumerated in the authors' order: the ellipse sweeps
  the 9x9 grid (rows fastest) while the square steps to its next grid position every 81
  frames; appearance (hue shifts) is fixed for the whole sequence, drawn once from the seed.
  Table 2 reports switches out of 255, so the default length is 255 frames; up to
  9^4 - 1 = 6,560 frames (the authors' full enumeration) are available.

Ground truth keeps identities: ``mask`` id 1 is always the ellipse and 2 the square (the
square is never entirely hidden: it is wider than the ellipse's minor axis); ``semantic``
follows Multi-Texture (1 = square, 2 = ellipse).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch.utils.data import Dataset

from datamodules.multi_texture import TexturedShapes
from datamodules.procedural import (ProceduralDataModule, ProceduralDataset, Random, Scene,
                                    item_keys, to_items)

GRID = torch.tensor([0.0, -6.0, 6.0, -12.0, 12.0, -18.0, 18.0, -24.0, 24.0])  # authors' order
KINDS = torch.tensor([1, 0])  # ellipse then square, as indices of multi_texture.TEXTURE_SHAPES
MAX_HUE = 0.45


@dataclass(frozen=True)
class IdentitySwitchRenderer:
    """Random two-object frames: the training distribution of the identity experiment."""

    shapes: TexturedShapes = TexturedShapes()

    def __call__(self, rng: Random) -> Scene:
        offsets = GRID[rng.integers(0, len(GRID), 2, 2)]
        hue = rng.uniform(3, low=-MAX_HUE, high=MAX_HUE)
        return render_frames(self.shapes, offsets, hue)


def render_frames(shapes: TexturedShapes, offsets: torch.Tensor, hue: torch.Tensor) -> Scene:
    """Frames with the ellipse and the square at ``offsets`` ``[N, 2, 2]`` from the centre."""
    n = len(offsets)
    active = torch.ones(n, 2, dtype=torch.bool)
    return shapes.render(KINDS.expand(n, 2), offsets + shapes.size / 2, hue, active)


def sequence_offsets(frames: Sequence[int]) -> torch.Tensor:
    """``[N, 2, 2]`` (row, column) offsets of the ellipse and the square in the given frames."""
    i = torch.as_tensor(list(frames), dtype=torch.int64)
    g = len(GRID)
    ellipse = torch.stack([GRID[i % g], GRID[(i // g) % g]], -1)
    square = torch.stack([GRID[(i // g ** 2) % g], GRID[(i // g ** 3) % g]], -1)
    return torch.stack([ellipse, square], 1)


class IdentitySequence(Dataset):
    """The evaluation sequence: frame ``i`` is a fixed function of ``i`` and of the seed."""

    def __init__(self, length: int, seed: int, shapes: TexturedShapes = TexturedShapes()):
        if not 0 < length < len(GRID) ** 4:
            raise ValueError(f"the sequence has 1 to {len(GRID) ** 4 - 1} frames, not {length}")
        self.length, self.shapes = length, shapes
        rng = Random(item_keys(seed, "identity_switch", "appearance", [0]))
        self.hue = rng.uniform(3, low=-MAX_HUE, high=MAX_HUE)  # one appearance for all frames

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> List[Dict[str, torch.Tensor]]:
        if any(not 0 <= int(i) < self.length for i in indices):
            raise IndexError(f"frame index out of range for a sequence of {self.length}")
        scene = render_frames(self.shapes, sequence_offsets(indices),
                              self.hue.expand(len(indices), -1))
        return to_items(scene)


class IdentitySwitchDataModule(ProceduralDataModule):
    """CIS Table 2's identity-switching data: random training frames, a fixed test sequence.

    Args:
        train_size: random two-object training frames.
        val_size: frames of the sequence used for validation (its first frames).
        test_size: frames of the evaluation sequence (255, Table 2's denominator).
        eval_on_train: unused by the sequence splits (they are a fixed enumeration); kept
            for a uniform interface.
        cache_dir: optional uint8 on-disk cache of the training frames.
        batch_size, options: see :class:`ObjectDataModule`; its ``seed`` also seeds
            generation and the sequence's appearance.
    """

    dataset_name = "identity_switch"
    image_size, channels, max_objects, num_classes, num_background = 64, 3, 2, 3, 1

    def __init__(self, train_size: int = 100_000, val_size: int = 81, test_size: int = 255,
                 eval_on_train: bool = False, cache_dir: Optional[str] = None,
                 batch_size: int = 8, **options: Any):
        super().__init__(train_size, val_size, test_size, eval_on_train, cache_dir,
                         batch_size, **options)

    def renderer(self, split: str) -> IdentitySwitchRenderer:
        return IdentitySwitchRenderer()

    def make_dataset(self, split: str) -> Dataset:
        if split == "train":
            return ProceduralDataset(self.renderer(split), self.dataset_name, self.seed, split,
                                     self.sizes[split], cache_dir=self.cache_dir)
        return IdentitySequence(self.sizes[split], self.seed)
