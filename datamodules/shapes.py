"""Vectorised rasterisation of the dSprites shapes and the 19 fixed tetrominoes, and placement.

Shapes are tested analytically at pixel centres inside a small window around each object,
for all objects of a batch at once: a pixel belongs to a sprite when its coordinates in the
sprite's rotated, scaled frame satisfy the shape's inequality. Only products and sums of
per-object values with fixed grids are used (angles come from a table built in double
precision), so a sprite's pixels never depend on how many others are rendered with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from typing import TYPE_CHECKING

from torch import Tensor

if TYPE_CHECKING:
    from datamodules.procedural import Random

SQUARE, ELLIPSE, HEART, TRIANGLE = 0, 1, 2, 3
SHAPE_NAMES = ("square", "ellipse", "heart", "triangle")

# The implicit heart (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 spans x in [-1.139, 1.139] and
# y in [-1, 1.236]; these constants map it onto the unit box, centred.
_HEART_HALF_WIDTH = 1.1390
_HEART_SHIFT = 0.118


@dataclass(frozen=True)
class ShapeStyle:
    """Proportions of the shapes, in units of the sprite's radius (half its nominal extent).

    Attributes:
        square: half-side of the square.
        ellipse: (semi-major, semi-minor) axes of the ellipse.
        heart: half-width of the heart.
        triangle: circumradius of the equilateral triangle.
    """

    square: float = 1.0
    ellipse: tuple = (1.0, 0.5)
    heart: float = 1.0
    triangle: float = 1.0


def angle_table(values: list) -> tuple:
    """(cos, sin) float32 tables of the given angles, computed in double precision."""
    cos = torch.tensor([math.cos(a) for a in values], dtype=torch.float32)
    sin = torch.tensor([math.sin(a) for a in values], dtype=torch.float32)
    return cos, sin


def window_offsets(window: int) -> Tensor:
    """Pixel-centre offsets 0.5, 1.5, ... of a window, as float32 ``[window]``."""
    return torch.arange(window, dtype=torch.float32) + 0.5


def sprite_windows(shape: Tensor, radius: Tensor, cos: Tensor, sin: Tensor, centre: Tensor,
                   window: int, style: ShapeStyle = ShapeStyle()) -> tuple:
    """Rasterise sprites into windows around their centres.

    Args:
        shape: int64 ``[...]`` shape ids (SQUARE, ELLIPSE, HEART, TRIANGLE).
        radius: float ``[...]`` sprite radius in pixels (scale included).
        cos, sin: float ``[...]`` the sprite's orientation.
        centre: float ``[..., 2]`` (row, column) of the centre in canvas pixels.
        window: side of the square window rasterised around each centre.
        style: shape proportions.

    Returns:
        ``(windows, origins)``: bool ``[..., window, window]`` and int64 ``[..., 2]`` canvas
        position of each window's top-left pixel (for :func:`procedural.paste_windows`).
    """
    origins = centre.floor().long() - window // 2
    local = (centre - origins.float()).reshape(-1, 2)  # centre inside the window
    grid = window_offsets(window)
    dy = grid.view(1, -1, 1) - local[:, 0].view(-1, 1, 1)
    dx = grid.view(1, 1, -1) - local[:, 1].view(-1, 1, 1)
    c = cos.reshape(-1, 1, 1)
    s = sin.reshape(-1, 1, 1)
    r = radius.reshape(-1, 1, 1)
    u = (c * dx + s * dy) / r  # the sprite's own frame: u along its axis, v across
    v = (c * dy - s * dx) / r
    kinds = shape.reshape(-1, 1, 1)
    tests = {SQUARE: lambda: _square(u, v, style.square),
             ELLIPSE: lambda: _ellipse(u, v, *style.ellipse),
             HEART: lambda: _heart(u, v, style.heart),
             TRIANGLE: lambda: _triangle(u, v, style.triangle)}
    inside = torch.zeros(u.shape, dtype=torch.bool)
    for kind in shape.unique().tolist():  # only the shapes present; a loop over 4 kinds
        inside = torch.where(kinds == kind, tests[kind](), inside)
    return inside.view(*shape.shape, window, window), origins


def _square(u: Tensor, v: Tensor, half: float) -> Tensor:
    return (u.abs() <= half) & (v.abs() <= half)


def _ellipse(u: Tensor, v: Tensor, major: float, minor: float) -> Tensor:
    return (u / major) ** 2 + (v / minor) ** 2 <= 1


def _heart(u: Tensor, v: Tensor, half_width: float) -> Tensor:
    x = u * (_HEART_HALF_WIDTH / half_width)
    y = -v * (_HEART_HALF_WIDTH / half_width) + _HEART_SHIFT  # image rows grow downwards
    return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0


def _triangle(u: Tensor, v: Tensor, circumradius: float) -> Tensor:
    # Equilateral triangle with a vertex on the +u axis: inside all three edges, whose
    # outward normals point at 60, 180 and 300 degrees, at the inradius R/2.
    inradius = circumradius / 2
    edge1 = u * 0.5 + v * (math.sqrt(3) / 2) <= inradius
    edge2 = -u <= inradius
    edge3 = u * 0.5 - v * (math.sqrt(3) / 2) <= inradius
    return edge1 & edge2 & edge3


# --- tetrominoes --------------------------------------------------------------------------
# The 19 fixed tetrominoes (7 free pieces in their distinct rotations), as cell lists
# (row, column) normalised to start at (0, 0): I x2, O x1, T x4, S x2, Z x2, J x4, L x4.
_TETROMINOES = (
    ((0, 0), (0, 1), (0, 2), (0, 3)), ((0, 0), (1, 0), (2, 0), (3, 0)),  # I
    ((0, 0), (0, 1), (1, 0), (1, 1)),  # O
    ((0, 0), (0, 1), (0, 2), (1, 1)), ((0, 1), (1, 0), (1, 1), (2, 1)),  # T
    ((0, 1), (1, 0), (1, 1), (1, 2)), ((0, 0), (1, 0), (1, 1), (2, 0)),
    ((0, 1), (0, 2), (1, 0), (1, 1)), ((0, 0), (1, 0), (1, 1), (2, 1)),  # S
    ((0, 0), (0, 1), (1, 1), (1, 2)), ((0, 1), (1, 0), (1, 1), (2, 0)),  # Z
    ((0, 0), (1, 0), (1, 1), (1, 2)), ((0, 0), (0, 1), (1, 0), (2, 0)),  # J
    ((0, 0), (0, 1), (0, 2), (1, 2)), ((0, 1), (1, 1), (2, 0), (2, 1)),
    ((0, 2), (1, 0), (1, 1), (1, 2)), ((0, 0), (1, 0), (2, 0), (2, 1)),  # L
    ((0, 0), (0, 1), (0, 2), (1, 0)), ((0, 0), (0, 1), (1, 1), (2, 1)),
)
NUM_TETROMINOES = len(_TETROMINOES)
TETROMINO_CELLS = torch.tensor(_TETROMINOES, dtype=torch.int64)  # [19, 4, 2]
TETROMINO_EXTENT = TETROMINO_CELLS.amax(1) + 1  # [19, 2] (rows, columns) in cells


def tetromino_occupancy() -> Tensor:
    """bool ``[19, 4, 4]``: which cells of a 4x4 grid each tetromino covers."""
    table = torch.zeros(NUM_TETROMINOES, 4, 4, dtype=torch.bool)
    pieces = torch.arange(NUM_TETROMINOES)[:, None]
    table[pieces, TETROMINO_CELLS[..., 0], TETROMINO_CELLS[..., 1]] = True
    return table


def tetromino_windows(shape: Tensor, cell: int) -> Tensor:
    """bool ``[..., 4*cell, 4*cell]`` pixels of each tetromino, its top-left cell at (0, 0)."""
    occupancy = tetromino_occupancy()
    grid = torch.arange(4 * cell) // cell
    return occupancy[shape][..., grid[:, None], grid[None, :]]


def tetromino_boxes(shape: Tensor, cell: int) -> Tensor:
    """int64 ``[..., 4, 4]``: each piece's cells as (row, column, height, width) pixel boxes."""
    cells = TETROMINO_CELLS[shape] * cell
    return torch.cat([cells, torch.full_like(cells, cell)], -1)


# --- placement ----------------------------------------------------------------------------
def first_valid(valid: Tensor) -> tuple:
    """Index of the first True along the last axis (candidate sampling) and whether any was."""
    found = valid.any(-1)
    return valid.to(torch.uint8).argmax(-1), found


def place_boxes(rng: Random, boxes: Tensor, active: Tensor, limits: Tensor,
                candidates: int = 32) -> tuple:
    """Place objects one by one at random integer origins so that no two overlap.

    Each object is a union of axis-aligned boxes; object k takes the first of ``candidates``
    uniformly drawn origins that overlaps no earlier object (the "resample the position
    until it is free" rule of the LAVAE and Tetrominoes generators, vectorised).

    Args:
        rng: one stream per image.
        boxes: int64 ``[N, K, B, 4]`` (row, column, height, width) relative to the origin;
            unused boxes have zero height.
        active: bool ``[N, K]``.
        limits: int64 ``[N, K, 2]`` exclusive upper bound of the origin's row and column.
        candidates: origins tried per object.

    Returns:
        ``(origins [N, K, 2] int64, ok [N] bool)``; ok is False when some object found no room.
    """
    n, k = active.shape
    draws = rng.uniform(k, candidates, 2)  # [N, K, R, 2]
    origins_all = (draws * limits[:, :, None, :].float()).long()
    origins = torch.zeros(n, k, 2, dtype=torch.int64)
    ok = torch.ones(n, dtype=torch.bool)
    for obj in range(k):
        cand = origins_all[:, obj, :, None, None, :] + boxes[:, obj, None, :, None, :2]
        size = boxes[:, obj, None, :, None, 2:]  # [N, 1, B, 1, 2]
        placed = (origins[:, :obj, None, :] + boxes[:, :obj, :, :2]).flatten(1, 2)  # [N, J, 2]
        placed_size = boxes[:, :obj, :, 2:].flatten(1, 2)
        placed_on = (active[:, :obj, None].expand(-1, -1, boxes.shape[2]).flatten(1)
                     & (placed_size > 0).all(-1))
        lo, hi = cand, cand + size  # [N, R, B, 1, 2]
        plo, phi = placed[:, None, None], (placed + placed_size)[:, None, None]
        clash = ((lo < phi) & (plo < hi)).all(-1) & (size > 0).all(-1) & placed_on[:, None, None]
        index, found = first_valid(~clash.flatten(2).any(-1))
        origins[:, obj] = origins_all[torch.arange(n), obj, index]
        ok &= found | ~active[:, obj]
    return origins, ok


def tight_boxes(windows: Tensor) -> Tensor:
    """int64 ``[..., 1, 4]`` (row, column, height, width) bounding box of each window's pixels
    (zero height and width for an empty window), for :func:`place_boxes`."""
    def span(any_on: Tensor) -> Tensor:
        first = any_on.to(torch.uint8).argmax(-1)
        last = any_on.shape[-1] - 1 - any_on.flip(-1).to(torch.uint8).argmax(-1)
        return torch.stack([first, (last - first + 1) * any_on.any(-1)], -1)

    rows, cols = span(windows.any(-1)), span(windows.any(-2))
    return torch.stack([rows[..., 0], cols[..., 0], rows[..., 1], cols[..., 1]], -1)[..., None, :]
