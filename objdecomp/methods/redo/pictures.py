"""ReDO's Figure 2 as a picture: masks and redrawings with a fixed code per column.

Rows are images; columns are the input, the ground-truth foreground (when the batch has a
mask), F's mask of region 1, then for every region k four redrawings of region k, each
column with its own z kept fixed across rows, so that a column shows how one code is drawn
on different shapes (Fig. 2 and 3 of the paper).
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor
from torchvision.utils import make_grid

from objdecomp.visualize import to_rgb

PICTURE_IMAGES = 5  # rows, as in Fig. 2
REDRAWS_PER_REGION = 4  # columns per region, as in Fig. 2
PICTURE_SEED = 0  # the fixed codes of the columns


@torch.no_grad()
def redrawing_figure(nets, batch: Dict[str, Tensor], num_background: int = 1,
                     redraws: int = REDRAWS_PER_REGION, seed: int = PICTURE_SEED) -> Tensor:
    """Figure 2 grid ``[3, H', W']`` in [0, 1].

    Args:
        nets: :class:`~objdecomp.methods.redo.networks.ReDONetworks`.
        batch: dict with ``image`` ``[B, C, H, W]`` in [0, 1] and optionally ``mask``.
        num_background: leading ids of ``mask`` that are background.
        redraws: columns per region.
        seed: seed of the fixed codes (one per region and column).
    """
    images = batch["image"].float()
    x = images * 2 - 1
    masks = nets.mask(x)
    b, n = images.shape[0], masks.shape[1]
    codes = torch.randn(n, redraws, nets.z_dim, generator=torch.Generator().manual_seed(seed))
    columns = [to_rgb(images)]
    if "mask" in batch:
        columns.append(to_rgb((batch["mask"] >= num_background).float()[:, None]))
    columns.append(to_rgb(masks[:, :1]))
    for k in range(n):
        region = torch.full((b,), k, dtype=torch.long, device=x.device)
        for j in range(redraws):
            z = codes[k, j].to(x.device).expand(b, -1)
            columns.append(to_rgb((nets.redraw(x, masks, z, region) + 1) / 2))
    # [columns, B, 3, H, W] -> row-major [B * columns, 3, H, W]: one row per image.
    grid = torch.stack(columns, dim=1).flatten(0, 1)
    return make_grid(grid.cpu(), nrow=len(columns), padding=2, pad_value=1.0)
