"""Pictures shared by every method and dataset: coloured segmentations and labelled grids."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision.utils import make_grid, save_image

from objdecomp.types import Decomposition

# A fixed qualitative palette (Tableau 20 order, then repeated), so ids keep their colour
# across pictures; id 0 (background) is black.
_PALETTE = torch.tensor([
    [0, 0, 0], [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
    [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
    [174, 199, 232], [255, 187, 120], [152, 223, 138], [255, 152, 150], [197, 176, 213],
    [196, 156, 148], [247, 182, 210], [199, 199, 199], [219, 219, 141], [158, 218, 229],
], dtype=torch.float32) / 255.0


def colorize(segmentation: Tensor) -> Tensor:
    """``[B, H, W]`` integer ids -> ``[B, 3, H, W]`` RGB in [0, 1] with a fixed palette."""
    palette = _PALETTE.to(segmentation.device)
    ids = segmentation.long()
    colours = palette[torch.where(ids == 0, 0, (ids - 1) % (len(palette) - 1) + 1)]
    return colours.permute(0, 3, 1, 2)


def to_rgb(images: Tensor) -> Tensor:
    """Grey ``[B, 1, H, W]`` images repeated to RGB; RGB passes through; clamped to [0, 1]."""
    images = images.float().clamp(0, 1)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def checkerboard(height: int, width: int, cell: int = 4) -> Tensor:
    """``[3, H, W]`` light-grey checkerboard, the usual backdrop of transparent pictures."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    board = (((ys // cell) + (xs // cell)) % 2).float() * 0.25 + 0.6
    return board.expand(3, -1, -1)


def over_checkerboard(rgb: Tensor, alpha: Tensor) -> Tensor:
    """Composite ``[N, C, H, W]`` colours with ``[N, 1, H, W]`` alpha over a checkerboard."""
    board = checkerboard(*rgb.shape[-2:]).to(rgb)
    return alpha * to_rgb(rgb) + (1 - alpha) * board


def decomposition_rows(images: Tensor, decomposition: Decomposition,
                       batch: Optional[Mapping[str, Tensor]] = None,
                       max_layers: int = 8) -> Mapping[str, Tensor]:
    """Named rows of a decomposition grid, each ``[B, 3, H, W]``.

    Rows: input, reconstruction, predicted segmentation, ground truth (when the batch has a
    mask) and the first ``max_layers`` components (their appearance over a checkerboard,
    weighted by their mask; the mask alone when the method has no ``layers``).
    """
    rows = {"input": to_rgb(images), "reconstruction": to_rgb(decomposition.recon),
            "segmentation": colorize(decomposition.segmentation())}
    if batch is not None and "mask" in batch:
        rows["ground truth"] = colorize(batch["mask"])
    for k in range(min(decomposition.num_components, max_layers)):
        alpha = decomposition.masks[:, k : k + 1].float()
        if decomposition.layers is not None:
            rows[f"component {k}"] = over_checkerboard(decomposition.layers[:, k].float(), alpha)
        else:
            rows[f"component {k}"] = to_rgb(alpha)
    return rows


def save_rows(rows: Mapping[str, Tensor], path: Path, padding: int = 2, labels: bool = True) -> Tensor:
    """Save rows (each ``[B, 3, H, W]``, same B) as one PNG grid, a row per entry, each
    labelled on its left with its name; return the grid ``[3, H', W']``."""
    tensors: Sequence[Tensor] = [row.detach().float().cpu() for row in rows.values()]
    grid = make_grid(torch.cat(tensors), nrow=tensors[0].shape[0], padding=padding, pad_value=1.0)
    if labels:
        strips = torch.stack([_label(name, tensors[0].shape[-2]) for name in rows])
        grid = torch.cat([make_grid(strips, nrow=1, padding=padding, pad_value=1.0), grid], dim=2)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    return grid


def _label(text: str, height: int, width: int = 96) -> Tensor:
    """``[3, height, width]`` white strip with ``text`` in black (PIL's built-in font)."""
    from PIL import Image, ImageDraw, ImageFont

    strip = Image.new("RGB", (width, height), "white")
    font = ImageFont.load_default(size=max(8, min(12, height // 2)))
    ImageDraw.Draw(strip).text((2, height // 2), text, fill="black", font=font, anchor="lm")
    return torch.from_numpy(np.asarray(strip).copy()).permute(2, 0, 1).float() / 255.0
