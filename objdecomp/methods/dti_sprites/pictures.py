"""DTI-Sprites' own pictures: the learned sprites (Fig. 1, 5, 8-10) and Fig. 3-style decompositions."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.utils import make_grid

from objdecomp.nn.transforms import softclip
from objdecomp.types import Decomposition
from objdecomp.visualize import colorize, over_checkerboard, to_rgb


@torch.no_grad()
def sprite_sheet(net, upscale: int = 2, per_row: int = 10) -> Tensor:
    """``[3, H, W]``: each sprite's appearance over a checkerboard through its mask, in id order
    (the colours of :func:`~objdecomp.visualize.colorize` for class ``k + 1`` frame sprite ``k``),
    followed by the background prototypes."""
    appearance = softclip(net.sprites.appearance).float().cpu()
    alpha = softclip(net.sprites.masks).float().cpu()
    sprites = over_checkerboard(appearance, alpha)
    ids = torch.arange(1, len(sprites) + 1)
    frames = colorize(ids[:, None, None].expand(-1, *sprites.shape[-2:]))
    sprites = _framed(sprites, frames)
    tiles = list(sprites)
    if net.num_backgrounds:
        backgrounds = to_rgb(softclip(net.backgrounds).float().cpu())
        size = sprites.shape[-1]
        tiles += list(torch.nn.functional.interpolate(backgrounds, size=(size, size), mode="bilinear",
                                                      align_corners=False, antialias=True))
    grid = make_grid(torch.stack(tiles), nrow=min(per_row, len(tiles)), padding=2, pad_value=1.0)
    return torch.nn.functional.interpolate(grid[None], scale_factor=upscale, mode="nearest")[0]


def _framed(tiles: Tensor, frames: Tensor, width: int = 1) -> Tensor:
    """Draw a ``width``-pixel border of ``frames``' colours around each tile ``[N, 3, h, w]``."""
    border = torch.ones_like(tiles[:, :1], dtype=torch.bool)
    border[..., width:-width, width:-width] = False
    return torch.where(border, frames, tiles)


@torch.no_grad()
def decomposition_figure(images: Tensor, decomposition: Decomposition, max_layers: int = 4,
                         max_images: int = 8) -> Tensor:
    """Fig. 3 as a grid, one column per image: input, reconstruction, semantic segmentation
    (colour = sprite), instance segmentation (colour = layer), then the first object layers
    (appearance through their visible mask, over a checkerboard)."""
    n = min(max_images, images.shape[0])
    masks = decomposition.masks[:n].float().cpu()
    rows = [to_rgb(images[:n].cpu()), to_rgb(decomposition.recon[:n].cpu()),
            colorize(decomposition.semantic_segmentation()[:n].cpu()),
            colorize(decomposition.segmentation()[:n].cpu())]
    layers = decomposition.layers[:n].float().cpu()
    for layer in range(1, min(decomposition.num_components, max_layers + 1)):
        rows.append(over_checkerboard(layers[:, layer], masks[:, layer : layer + 1]))
    return make_grid(torch.cat(rows), nrow=n, padding=2, pad_value=1.0)
