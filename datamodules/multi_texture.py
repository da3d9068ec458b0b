"""Multi-Texture (CIS §4.1): chessboard-textured squares and ellipses on a wood-like background.

"1 to 4 shapes are randomly selected, and independently textured using randomly colorized
chessboard patterns. Then, these textured objects are randomly placed on a randomly colorized
wooden texture background." The authors' generator fixes the rest, which we
follow: 64x64 images; P(4) = .8, P(3) = .1, P(2) = .07, P(1) = .03 objects; each a square or
an ellipse, translated only, by offsets uniform in +-32 px from the centre, redrawn while
within L1 distance 10 of an earlier object; *earlier objects in front*; one hue shift
U(-0.45, 0.45) per object's chessboard and one for the background's wood.

Deliberate choices (the authors' shape and texture images are not described): a 22x22
square and a 26x18 ellipse, procedural textures (:mod:`datamodules.textures`), and hard
shape edges (the authors interpolate a shifted mask), and the background's hue shift rounded
to 1/1024 of the hue circle (a lookup table; below one uint8 level). Objects may hang over the border, as
in the authors' generator; an object hidden entirely is redrawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from datamodules.procedural import (ProceduralDataModule, Random, Scene, flat_colours,
                                    paste_windows, scene_from_ids)
from datamodules.shapes import ELLIPSE, SQUARE, ShapeStyle, first_valid, sprite_windows
from datamodules.textures import chess_colours, chessboard_parity, wood_shifted

COUNT_PROBABILITIES = (0.03, 0.07, 0.10, 0.80)  # P(1), P(2), P(3), P(4)
TEXTURE_SHAPES = torch.tensor([SQUARE, ELLIPSE])  # semantic classes 1 and 2


@dataclass(frozen=True)
class TexturedShapes:
    """Draws squares and ellipses with hue-shifted chessboards over hue-shifted wood."""

    size: int = 64
    radius: float = 11.0  # the square's half-side in pixels
    ellipse: tuple = (13 / 11, 9 / 11)  # the ellipse's semi-axes, in units of the radius
    window: int = 32
    cell: int = 4  # chessboard square

    def render(self, kind: Tensor, centre: Tensor, hue: Tensor, active: Tensor,
               ok: Optional[Tensor] = None) -> Scene:
        """Render ``[N, K]`` objects (``kind`` indexes :data:`TEXTURE_SHAPES`) at float
        ``centre`` ``[N, K, 2]`` with hue shifts ``hue`` ``[N, K + 1]`` (entry 0: background);
        earlier objects occlude later ones."""
        shape = TEXTURE_SHAPES[kind]
        ones = torch.ones(kind.shape)
        windows, origins = sprite_windows(shape, ones * self.radius, ones, ones * 0, centre,
                                          self.window, ShapeStyle(ellipse=self.ellipse))
        ids = paste_windows(windows, origins, active, self.size, front="first")
        # Objects show their hue-shifted chessboard, the background its hue-shifted wood.
        n, k = kind.shape
        palette = torch.cat([torch.zeros(n, 2, 3, dtype=torch.uint8),
                             chess_colours(hue[:, 1:]).flatten(1, 2)], 1)  # [N, 2 + 2K, 3]
        entry = ids * 2 + chessboard_parity(self.size, self.cell)  # 0/1 = background
        image = torch.where((ids == 0)[:, None], wood_shifted(hue[:, 0], self.size),
                            flat_colours(entry, palette))
        classes = torch.cat([torch.zeros(len(kind), 1, dtype=torch.int64), kind + 1], 1)
        return scene_from_ids(ids, image, classes, active, ok=ok)


@dataclass(frozen=True)
class MultiTextureRenderer:
    """CIS's Multi-Texture scenes: counts, placement rule and hue shifts of the authors' generator."""

    shapes: TexturedShapes = TexturedShapes()
    max_shift: float = 32.0  # offsets from the centre, uniform in +-max_shift px
    min_distance: float = 10.0  # L1 distance an object keeps from earlier ones
    max_hue: float = 0.45
    candidates: int = 32

    def __call__(self, rng: Random) -> Scene:
        k = len(COUNT_PROBABILITIES)
        count = rng.choice(COUNT_PROBABILITIES) + 1
        active = torch.arange(k) < count[:, None]
        kind = rng.integers(0, len(TEXTURE_SHAPES), k)
        offsets, placed = self._place(rng, active)
        hue = rng.uniform(k + 1, low=-self.max_hue, high=self.max_hue)
        centre = offsets + self.shapes.size / 2
        return self.shapes.render(kind, centre, hue, active, ok=placed)

    def _place(self, rng: Random, active: Tensor) -> tuple:
        """Each object takes the first candidate offset farther than ``min_distance`` (L1)
        from every earlier object: the authors' "redraw while too close", vectorised."""
        n, k = active.shape
        candidates = rng.uniform(k, self.candidates, 2, low=-self.max_shift, high=self.max_shift)
        offsets = torch.zeros(n, k, 2)
        ok = torch.ones(n, dtype=torch.bool)
        for obj in range(k):
            distance = (candidates[:, obj, :, None] - offsets[:, None, :obj]).abs().sum(-1)
            near = (distance <= self.min_distance) & active[:, None, :obj]
            index, found = first_valid(~near.any(-1))
            offsets[:, obj] = candidates[torch.arange(n), obj, index]
            ok &= found | ~active[:, obj]
        return offsets, ok


class MultiTextureDataModule(ProceduralDataModule):
    """Multi-Texture (CIS §4.1): 64x64, 1-4 textured squares/ellipses; K = 3 classes.

    Args:
        train_size: training images (CIS generates them on the fly; any size).
        val_size: validation images (the authors' code: 200).
        test_size: test images (the authors' code: 2,000; mIoU over 10 subsets of 200).
        eval_on_train: evaluate on the first training images instead of disjoint splits.
        cache_dir: optional uint8 on-disk cache of the rendered splits.
        batch_size, options: see :class:`ObjectDataModule`; its ``seed`` also seeds
            generation.
    """

    dataset_name = "multi_texture"
    image_size, channels, max_objects, num_classes, num_background = 64, 3, 4, 3, 1

    def __init__(self, train_size: int = 100_000, val_size: int = 200, test_size: int = 2_000,
                 eval_on_train: bool = False, cache_dir: Optional[str] = None,
                 batch_size: int = 8, **options: Any):
        super().__init__(train_size, val_size, test_size, eval_on_train, cache_dir,
                         batch_size, **options)

    def renderer(self, split: str) -> MultiTextureRenderer:
        return MultiTextureRenderer()
