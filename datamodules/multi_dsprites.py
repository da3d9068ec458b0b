"""Multi-dSprites, procedurally: DeepMind's two coloured variants, DTI's 2-object subset, LAVAE's set.

DeepMind's Multi-dSprites (multi_object_datasets README) scatters
dSprites sprites (square, ellipse, heart with dSprites' 6 scales in [0.5, 1], 40 orientations
in [0, 2pi] and 32x32 positions in [0, 1]) over a 64x64 background, later sprites occluding
earlier ones:

* ``colored_on_grayscale`` (``multi_dsprites``, what DTI-Sprites trains on, its
  ``dsprites_gray`` folder): 2-5 sprites with random HSV colours on a random grey.
* ``colored_on_colored`` (``multi_dsprites_colored``, what CIS uses): 1-4 sprites, sprite and
  background colours uniform in RGB.

The Love2D geometry behind dSprites is unpublished; our choices, kept in
:class:`MultiDSpritesRenderer`'s fields: a scale-1 square is 0.3 of the canvas wide (19 px),
the ellipse's axes are 1 : 0.5 of the square's side, the heart is as wide as the square, and
the 32 positions span the central 60% of the canvas, so sprites stay (nearly) inside.
The HSV ranges of the sprite colours are unpublished too: hue uniform, saturation and value
uniform in [0.5, 1] (vivid sprites, as in the dataset's preview). Every sprite keeps at least
one visible pixel: a draw that hides one entirely is redrawn.

LAVAE's multi-dSprites (§3.2) differs: black canvas, 0-3 sprites (7 in its test split) of
square, ellipse or triangle drawn in 19x19 patches, 6 scales in [0.6, 1.0], 40 orientations
in [0, 2pi), 7 saturated colours, scattered "avoiding overlaps". The authors' public generator
keeps whole patches apart, which cannot fit 7 patches (62% of the canvas, above the ~56%
jamming limit of random sequential placement); we keep the sprites' tight bounding boxes
apart instead, which is the same rule for the small sprites and makes the 7-object split
possible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from datamodules.procedural import (ProceduralDataModule, Random, Scene, finish_scene,
                                    paste_windows, quantize)
from datamodules.shapes import (ELLIPSE, SQUARE, TRIANGLE, ShapeStyle, angle_table,
                                place_boxes, sprite_windows, tight_boxes)
from datamodules.textures import hsv_to_rgb

# dSprites' latent grids (dsprites-dataset README): 6 scales, 40 orientations, 32 positions.
DSPRITES_SCALES = torch.tensor(np.linspace(0.5, 1.0, 6), dtype=torch.float32)
DSPRITES_ANGLES = angle_table(list(np.linspace(0.0, 2 * math.pi, 40)))
DSPRITES_POSITIONS = np.linspace(0.0, 1.0, 32)


@dataclass(frozen=True)
class MultiDSpritesRenderer:
    """DeepMind's Multi-dSprites generator (one of its coloured variants)."""

    variant: str = "colored_on_grayscale"  # or "colored_on_colored"
    min_objects: int = 2
    max_objects: int = 5
    size: int = 64
    radius: float = 0.15  # half-side of a scale-1 square, as a fraction of the canvas
    span: tuple = (0.2, 0.8)  # canvas interval covered by dSprites' positions 0..1
    saturation: tuple = (0.5, 1.0)
    value: tuple = (0.5, 1.0)
    window: int = 32  # holds any sprite at scale 1 in any orientation

    def __call__(self, rng: Random) -> Scene:
        n, k = len(rng), self.max_objects
        count = rng.integers(self.min_objects, self.max_objects + 1)
        active = torch.arange(k) < count[:, None]
        shape = rng.integers(0, 3, k)  # square, ellipse, heart: dSprites' order
        scale = DSPRITES_SCALES[rng.integers(0, 6, k)]
        angle = rng.integers(0, 40, k)
        low, high = self.span
        positions = torch.tensor((low + (high - low) * DSPRITES_POSITIONS) * self.size,
                                 dtype=torch.float32)
        centre = positions[rng.integers(0, 32, k, 2)]
        windows, origins = sprite_windows(shape, scale * (self.radius * self.size),
                                          DSPRITES_ANGLES[0][angle], DSPRITES_ANGLES[1][angle],
                                          centre, self.window)
        ids = paste_windows(windows, origins, active, self.size)
        palette = torch.cat([self._background(rng), self._sprite_colours(rng, k)], 1)
        classes = torch.cat([torch.zeros(n, 1, dtype=torch.int64), shape + 1], 1)
        return finish_scene(ids, quantize(palette), classes, active)

    def _background(self, rng: Random) -> torch.Tensor:
        if self.variant == "colored_on_grayscale":
            return rng.uniform(1, 1).expand(-1, -1, 3)
        return rng.uniform(1, 3)

    def _sprite_colours(self, rng: Random, k: int) -> torch.Tensor:
        if self.variant == "colored_on_colored":
            return rng.uniform(k, 3)
        hsv = torch.stack([rng.uniform(k), rng.uniform(k, low=self.saturation[0],
                                                       high=self.saturation[1]),
                           rng.uniform(k, low=self.value[0], high=self.value[1])], -1)
        return hsv_to_rgb(hsv)


# LAVAE §3.2: 7 saturated colours (each channel 0 or 255, not all 0).
LAVAE_COLOURS = torch.tensor([[r, g, b] for r in (0, 255) for g in (0, 255) for b in (0, 255)][1:],
                             dtype=torch.uint8)
LAVAE_SHAPES = torch.tensor([SQUARE, ELLIPSE, TRIANGLE])
LAVAE_SCALES = torch.tensor(np.linspace(0.6, 1.0, 6), dtype=torch.float32)
LAVAE_ANGLES = angle_table(list(np.linspace(0.0, 2 * math.pi, 40, endpoint=False)))
# The square and the triangle are regular polygons inscribed in the patch's circle, the
# ellipse has radii 1/2 and 1/3 of the patch (LAVAE's public generator).
LAVAE_STYLE = ShapeStyle(square=1 / math.sqrt(2), ellipse=(1.0, 2 / 3), triangle=1.0)


@dataclass(frozen=True)
class LAVAEDSpritesRenderer:
    """LAVAE's multi-dSprites: non-overlapping sprite patches on a black canvas."""

    min_objects: int = 0
    max_objects: int = 3
    size: int = 64
    patch: int = 19  # "the maximum sprite size is 19x19"
    candidates: int = 64

    def __call__(self, rng: Random) -> Scene:
        n, k = len(rng), self.max_objects
        count = rng.integers(self.min_objects, self.max_objects + 1)
        active = torch.arange(k) < count[:, None]
        kind = rng.integers(0, 3, k)
        scale = LAVAE_SCALES[rng.integers(0, 6, k)]
        angle = rng.integers(0, 40, k)
        colour = rng.integers(0, len(LAVAE_COLOURS), k)
        centre = torch.full((n, k, 2), self.patch / 2)  # sprites are drawn in their patch
        windows, _ = sprite_windows(LAVAE_SHAPES[kind], scale * (self.patch / 2),
                                    LAVAE_ANGLES[0][angle], LAVAE_ANGLES[1][angle], centre,
                                    self.patch, LAVAE_STYLE)
        # Patches lie inside the canvas; sprites' bounding boxes never overlap.
        limits = torch.full((n, k, 2), self.size - self.patch + 1)
        origins, placed = place_boxes(rng, tight_boxes(windows), active, limits,
                                      self.candidates)
        ids = paste_windows(windows, origins, active, self.size)
        palette = torch.cat([torch.zeros(n, 1, 3, dtype=torch.uint8), LAVAE_COLOURS[colour]], 1)
        classes = torch.cat([torch.zeros(n, 1, dtype=torch.int64), kind + 1], 1)
        return finish_scene(ids, palette, classes, active, ok=placed)


_LOADER_ARGS = """
        eval_on_train: DTI-Sprites' protocol, evaluation on the first training images (see
            :class:`ProceduralDataModule`); off by default, keeping the splits disjoint.
        cache_dir: optional uint8 on-disk cache of the rendered splits.
        batch_size, options: see :class:`ObjectDataModule`; its ``seed`` also seeds
            generation."""


class MultiDSpritesDataModule(ProceduralDataModule):
    """Multi-dSprites ``colored_on_grayscale`` (DTI-Sprites §4.1): 2-5 sprites, K = 4 classes.

    Args:
        train_size: training images (DTI: 60k).
        val_size: validation images (DTI's code: 100).
        test_size: test images (DTI evaluates on 320).
    """ + _LOADER_ARGS

    dataset_name = "multi_dsprites"
    image_size, channels, max_objects, num_classes, num_background = 64, 3, 5, 4, 1
    variant, min_objects = "colored_on_grayscale", 2

    def __init__(self, train_size: int = 60_000, val_size: int = 100, test_size: int = 320,
                 eval_on_train: bool = False, cache_dir: Optional[str] = None,
                 batch_size: int = 32, **options: Any):
        super().__init__(train_size, val_size, test_size, eval_on_train, cache_dir,
                         batch_size, **options)

    def renderer(self, split: str) -> MultiDSpritesRenderer:
        return MultiDSpritesRenderer(self.variant, self.min_objects, self.max_objects,
                                     self.image_size)


class MultiDSprites2DataModule(MultiDSpritesDataModule):
    """Multi-dSprites2, DTI-Sprites' ablation set (Table 2): ``colored_on_grayscale`` scenes
    with exactly two sprites. The paper does not give its size; the defaults are the full set's.

    Args:
        train_size: training images.
        val_size: validation images.
        test_size: test images (320, as for the full set).
    """ + _LOADER_ARGS

    dataset_name = "multi_dsprites2"
    max_objects, min_objects = 2, 2


class MultiDSpritesColoredDataModule(MultiDSpritesDataModule):
    """Multi-dSprites ``colored_on_colored`` (CIS §4.1): 1-4 sprites on a random colour.

    Args:
        train_size: training images (CIS: the 1M records less its 2,000 test and 1,000
            validation records).
        val_size: validation images (1,000).
        test_size: test images (2,000: CIS scores 10 subsets of 200).
    """ + _LOADER_ARGS

    dataset_name = "multi_dsprites_colored"
    variant, min_objects, max_objects = "colored_on_colored", 1, 4

    def __init__(self, train_size: int = 997_000, val_size: int = 1_000, test_size: int = 2_000,
                 eval_on_train: bool = False, cache_dir: Optional[str] = None,
                 batch_size: int = 32, **options: Any):
        super().__init__(train_size, val_size, test_size, eval_on_train, cache_dir,
                         batch_size, **options)


class LAVAEDSpritesDataModule(ProceduralDataModule):
    """LAVAE's multi-dSprites (§3.2): 0-3 non-overlapping sprites on black, 7 in the test split.

    Args:
        train_size: training images (190k).
        val_size: held-out images with 0-3 sprites (10k).
        test_size: test images (10k).
        test_objects: sprites per test image (7, the generalisation test); ``None`` draws
            the test split like the training split.
        image_size: canvas side (64 in the paper; smaller canvases are CPU-sized variants).
        patch: sprite patch side (19 in the paper); by default 19/64 of the canvas (odd).
    """ + _LOADER_ARGS

    dataset_name = "lavae_dsprites"
    image_size, channels, num_classes, num_background = 64, 3, 4, 1

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
        self.patch = patch if patch is not None else (19 * image_size // 64) | 1

    def renderer(self, split: str) -> LAVAEDSpritesRenderer:
        if split == "test" and self.test_objects is not None:
            return LAVAEDSpritesRenderer(self.test_objects, self.test_objects, self.image_size,
                                         self.patch)
        return LAVAEDSpritesRenderer(size=self.image_size, patch=self.patch)
