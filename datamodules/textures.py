"""Procedural textures of Multi-Texture (CIS §4.1): a wood-like background and a chessboard.

CIS textures each object with "randomly colorized chessboard patterns" and places the objects
on "a randomly colorized wooden texture background"; its generator hue-shifts one fixed
chessboard image per object and one fixed wood image per scene (notes/cis.md). Those images
ship with the authors' code; ours are procedural stand-ins with the same roles: a fixed
canvas-aligned chessboard of two colours, and fixed wood grain (distorted rings, light and
dark bands). Both are computed once per canvas size, in HSV, so that a per-image hue shift is
a cheap addition.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

# Two chessboard colours of different hue and value, so that the pattern survives any hue
# shift (a grey or white square would not change colour at all).
CHESS_COLOURS = ((0.86, 0.20, 0.16), (0.96, 0.84, 0.30))
WOOD_LIGHT, WOOD_DARK = (0.80, 0.58, 0.33), (0.47, 0.27, 0.12)


def rgb_to_hsv(rgb: Tensor, dim: int = 0) -> Tensor:
    """RGB in [0, 1] to HSV in [0, 1] along ``dim`` (the inverse of ``procedural.hsv_to_rgb``)."""
    r, g, b = rgb.unbind(dim)
    value, _ = rgb.max(dim)
    spread = value - rgb.min(dim).values
    safe = torch.where(spread > 0, spread, torch.ones_like(spread))
    hue = torch.where(value == r, (g - b) / safe,
                      torch.where(value == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = torch.where(spread > 0, (hue / 6) % 1.0, torch.zeros_like(hue))
    saturation = torch.where(value > 0, spread / torch.where(value > 0, value, 1), 0)
    return torch.stack([hue, saturation, value], dim)


def chessboard(size: int, cell: int = 4) -> Tensor:
    """``[3, size, size]`` RGB chessboard of :data:`CHESS_COLOURS` with ``cell``-pixel squares."""
    index = torch.arange(size) // cell
    parity = (index[:, None] + index[None, :]) % 2
    colours = torch.tensor(CHESS_COLOURS)
    return colours[parity].permute(2, 0, 1)


def wood(size: int) -> Tensor:
    """``[3, size, size]`` RGB wood grain: rings around a point off the canvas, stretched along
    the grain and wavily distorted, shaded between a light and a dark brown."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size, dtype=torch.float64),
                          torch.linspace(0, 1, size, dtype=torch.float64), indexing="ij")
    radius = torch.sqrt((x + 0.35) ** 2 * 0.15 + (y - 0.4) ** 2)
    radius = radius + 0.015 * torch.sin(2 * math.pi * (3 * x + 5 * y))
    rings = 0.5 + 0.5 * torch.sin(2 * math.pi * 9 * radius)
    band = rings ** 3  # thin dark late-wood bands between wide light early-wood ones
    light, dark = torch.tensor(WOOD_LIGHT, dtype=torch.float64), torch.tensor(WOOD_DARK, dtype=torch.float64)
    colour = dark[:, None, None] + (light - dark)[:, None, None] * (1 - band)
    return colour.float()


@lru_cache(maxsize=4)
def texture_hsv(size: int, cell: int = 4) -> tuple:
    """(wood, chessboard) as ``[3, size, size]`` HSV canvases, computed once per size."""
    return rgb_to_hsv(wood(size)), rgb_to_hsv(chessboard(size, cell))
