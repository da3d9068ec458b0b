"""Tetrominoes (DeepMind multi_object_datasets' "Tetris"), generated procedurally.

Each 35x35 image holds three non-overlapping tetrominoes on black, each one of the 19 fixed
pieces (7 free tetrominoes in their distinct rotations; DeepMind's README says 17, its
issue #10 and DTI-Sprites §4.1 count 19) in one of six saturated colours (red, green, blue,
yellow, magenta, cyan). DTI-Sprites trains on 60k such images and evaluates on 320 (§4.1);
its semantic task has K = 20 classes, the 19 pieces plus background (Table 5).

Deliberate choices where the dataset's description is silent (its generator is not public):
cells are 5x5 pixels (so the canvas is 7 cells wide and a piece fits DTI's 24-pixel sprite),
pieces sit at any integer pixel offset fully inside the canvas, and "non-overlapping" means
no shared pixel (pieces may touch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from datamodules.procedural import (ProceduralDataModule, Random, Scene, finish_scene,
                                    paste_windows)
from datamodules.shapes import (NUM_TETROMINOES, TETROMINO_EXTENT, place_boxes,
                                tetromino_boxes, tetromino_windows)

# Red, green, blue, yellow, magenta, cyan (the README's six colours).
COLOURS = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255],
                        [0, 255, 255]], dtype=torch.uint8)


@dataclass(frozen=True)
class TetrominoesRenderer:
    """Renders Tetrominoes scenes; the fields are the generator's whole configuration."""

    size: int = 35
    cell: int = 5
    num_objects: int = 3
    candidates: int = 32  # positions tried per piece before the image is redrawn

    def __call__(self, rng: Random) -> Scene:
        n, k = len(rng), self.num_objects
        shape = rng.integers(0, NUM_TETROMINOES, k)
        colour = rng.integers(0, len(COLOURS), k)
        active = torch.ones(n, k, dtype=torch.bool)
        limits = self.size - TETROMINO_EXTENT[shape] * self.cell + 1  # origins keep it inside
        origins, placed = place_boxes(rng, tetromino_boxes(shape, self.cell), active, limits,
                                      self.candidates)
        ids = paste_windows(tetromino_windows(shape, self.cell), origins, active, self.size)
        palette = torch.cat([torch.zeros(n, 1, 3, dtype=torch.uint8), COLOURS[colour]], 1)
        classes = torch.cat([torch.zeros(n, 1, dtype=torch.int64), shape + 1], 1)
        return finish_scene(ids, palette, classes, active, ok=placed)


class TetrominoesDataModule(ProceduralDataModule):
    """Procedural Tetrominoes: 35x35, three pieces, semantic classes = the 19 pieces.

    Args:
        train_size: training images (60k as in DTI-Sprites §4.1).
        val_size: validation images (DTI's code validates on 100).
        test_size: test images (DTI evaluates on 320).
        eval_on_train: DTI's protocol, evaluation on the first training images (see
            :class:`ProceduralDataModule`); off by default, keeping the splits disjoint.
        cache_dir: optional uint8 on-disk cache of the rendered splits.
        batch_size, options: see :class:`ObjectDataModule`; its ``seed`` also seeds
            generation.
    """

    dataset_name = "tetrominoes"
    image_size, channels, max_objects = 35, 3, 3
    num_classes, num_background = NUM_TETROMINOES + 1, 1

    def __init__(self, train_size: int = 60_000, val_size: int = 100, test_size: int = 320,
                 eval_on_train: bool = False, cache_dir: Optional[str] = None,
                 batch_size: int = 32, **options: Any):
        super().__init__(train_size, val_size, test_size, eval_on_train, cache_dir,
                         batch_size, **options)

    def renderer(self, split: str) -> TetrominoesRenderer:
        return TetrominoesRenderer(size=self.image_size, num_objects=self.max_objects)
