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


# --- charts --------------------------------------------------------------------------------
def bar_chart(panels: Mapping[str, Mapping[str, Mapping[str, tuple]]], series: Sequence[str],
              path: Path, bar_width: int = 14, height: int = 160) -> None:
    """Grouped bars of scores in [0, 1] as one PNG: a panel per title (e.g. a benchmark), a group
    per label (a method), a bar per ``series`` name (a metric) holding ``(mean, std)``, the std
    drawn as a whisker; a missing value leaves its place empty (the table says why)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=11)
    colours = [tuple(int(255 * v) for v in c) for c in _PALETTE[1:1 + len(series)].tolist()]
    group_width = max(bar_width * len(series) + 12, 84)  # room for a label of 14 characters
    margin, legend, caption = 34, 18, 30
    widths = [margin + group_width * max(1, len(groups)) + 8 for groups in panels.values()]
    image = Image.new("RGB", (max([360, *widths]), legend + len(panels) * (height + caption + 24) + 4), "white")
    draw = ImageDraw.Draw(image)
    for i, name in enumerate(series):  # the legend
        x = 4 + i * 130
        draw.rectangle([x, 4, x + 10, 14], fill=colours[i])
        draw.text((x + 14, 9), _latin(name), fill="black", font=font, anchor="lm")
    top = legend
    for title, groups in panels.items():
        draw.text((4, top + 8), _latin(title), fill="black", font=font, anchor="lm")
        base = top + 24 + height
        for tick in (0.0, 0.5, 1.0):  # the axis
            y = base - tick * height
            draw.line([margin - 3, y, image.width - 4, y], fill=(220, 220, 220))
            draw.text((margin - 5, y), f"{tick:g}", fill="black", font=font, anchor="rm")
        for g, (label, bars) in enumerate(groups.items()):
            left = margin + g * group_width + 6
            bar_left = left + (group_width - 12 - bar_width * len(series)) // 2
            for s, name in enumerate(series):
                if name not in bars:
                    continue
                mean, std = bars[name]
                x0 = bar_left + s * bar_width
                draw.rectangle([x0, base - max(0.0, min(1.0, mean)) * height, x0 + bar_width - 2, base],
                               fill=colours[s])
                centre = x0 + bar_width // 2 - 1
                draw.line([centre, base - min(1.0, mean + std) * height,
                           centre, base - max(0.0, mean - std) * height], fill="black")
            draw.text((left + group_width // 2 - 6, base + 10), _latin(label)[:14], fill="black", font=font,
                      anchor="mm")
        top = base + caption
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _latin(text: str) -> str:
    """``text`` in the letters PIL's built-in font has (it has no Greek): β -> beta."""
    return text.replace("β", "beta").replace("γ", "gamma").replace("λ", "lambda")
