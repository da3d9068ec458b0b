"""Procedural textures of Multi-Texture (CIS §4.1): a wood-like background and a chessboard.

CIS textures each object with "randomly colorized chessboard patterns" and places the objects
on "a randomly colorized wooden texture background"; its generator hue-shifts one fixed
chessboard image per object and one fixed wood image per scene. Those images
ship with the authors' code; ours are procedural stand-ins with the same roles: a fixed
canvas-aligned chessboard of two colours, and fixed wood grain (distorted rings, light and
dark bands), computed once per canvas size. Also the HSV <-> RGB conversions the colour laws
of the procedural sets use.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from datamodules.procedural import quantize

# Two chessboard colours of different hue and value, so that the pattern survives any hue
# shift (a grey or white square would not change colour at all).
CHESS_COLOURS = ((0.86, 0.20, 0.16), (0.96, 0.84, 0.30))
WOOD_LIGHT, WOOD_DARK = (0.80, 0.58, 0.33), (0.47, 0.27, 0.12)
HUE_LEVELS = 1024


def hsv_to_rgb(hsv: Tensor, dim: int = -1) -> Tensor:
    """HSV to RGB in [0, 1]; hues wrap around (piecewise linear, exact in any batch layout)."""
    h, s, v = hsv.unbind(dim)
    sextant = h.unsqueeze(dim) * 6 + torch.tensor([5.0, 3.0, 1.0]).view(
        [3] + [1] * (hsv.dim() - 1 - (dim % hsv.dim())))
    k = sextant.remainder_(6)
    ramp = torch.minimum(k, 4 - k).clamp_(0, 1)
    return v.unsqueeze(dim) - (v * s).unsqueeze(dim) * ramp


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


def chessboard_parity(size: int, cell: int = 4) -> Tensor:
    """int64 ``[size, size]``: which of the two :data:`CHESS_COLOURS` each pixel shows."""
    index = torch.arange(size) // cell
    return (index[:, None] + index[None, :]) % 2


def chess_colours(shift: Tensor) -> Tensor:
    """uint8 ``[..., 2, 3]``: the two chessboard colours with their hue shifted by ``shift``."""
    hsv = rgb_to_hsv(torch.tensor(CHESS_COLOURS), dim=-1)  # [2, 3]
    hue = hsv[:, 0] + shift[..., None]
    shifted = torch.cat([hue[..., None], hsv[:, 1:].expand(*hue.shape, 2)], -1)
    return quantize(hsv_to_rgb(shifted))


def wood(size: int) -> Tensor:
    """``[3, size, size]`` RGB wood grain: rings around a point off the canvas, stretched along
    the grain and wavily distorted, shaded between a light and a dark brown."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size, dtype=torch.float64),
                          torch.linspace(0, 1, size, dtype=torch.float64), indexing="ij")
    radius = torch.sqrt((x + 0.35) ** 2 * 0.15 + (y - 0.4) ** 2)
    radius = radius + 0.015 * torch.sin(2 * math.pi * (3 * x + 5 * y))
    rings = 0.5 + 0.5 * torch.sin(2 * math.pi * 9 * radius)
    band = rings ** 3  # thin dark late-wood bands between wide light early-wood ones
    light = torch.tensor(WOOD_LIGHT, dtype=torch.float64)[:, None, None]
    dark = torch.tensor(WOOD_DARK, dtype=torch.float64)[:, None, None]
    return (dark + (light - dark) * (1 - band)).float()


@lru_cache(maxsize=2)
def wood_hue_table(size: int, levels: int = HUE_LEVELS) -> Tensor:
    """uint8 ``[levels, 3, size, size]``: the wood with its hue shifted by ``j / levels``.

    Shifting a whole canvas per image is the costliest step of Multi-Texture; a table of
    1,024 shifts (steps under one uint8 level of any channel) replaces it by a lookup.
    """
    hsv = rgb_to_hsv(wood(size))
    shifts = torch.arange(levels, dtype=torch.float32) / levels
    hue = hsv[0] + shifts[:, None, None]
    table = hsv_to_rgb(torch.stack([hue, hsv[1].expand_as(hue), hsv[2].expand_as(hue)], 1), dim=1)
    return quantize(table)


def wood_shifted(shift: Tensor, size: int) -> Tensor:
    """uint8 ``[N, 3, size, size]`` wood with hue shifts ``shift`` ``[N]`` (nearest table level)."""
    level = (shift.remainder(1.0) * HUE_LEVELS).round().long() % HUE_LEVELS
    return wood_hue_table(size)[level]
