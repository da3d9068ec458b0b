"""CIS's own pictures: the inpainter's view of each segment (Fig. 3 in spirit) and, with the
object VAEs, latent traversals of one object (Fig. 6, 7, 9, 11).

The decomposition grid of every method already shows the segmentation (Fig. 4, 5, 8, 10).
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor
from torchvision.utils import make_grid

from objdecomp.types import Decomposition
from objdecomp.visualize import to_rgb

PICTURE_IMAGES = 4
TRAVERSAL_VALUES = torch.linspace(-2.0, 2.0, 7)
TRAVERSED_DIMENSIONS = 4


@torch.no_grad()
def cis_pictures(model, images: Tensor, decomposition: Decomposition) -> Dict[str, Tensor]:
    """``inpainting``: per row an image, then for each mask the context ψ sees and ψ's
    prediction; ``traversal`` (object VAEs only): the first image's largest foreground
    segment, each row one of its most used latent dimensions swept over [-2, 2]."""
    images = images[:PICTURE_IMAGES].float()
    masks = decomposition.masks[:PICTURE_IMAGES].float()
    inpainted = model.inpainter(images, masks, model.edges(images)).clamp(0, 1)
    columns = [images]
    for k in range(masks.shape[1]):
        columns += [images * (1 - masks[:, k : k + 1]), inpainted[:, k]]
    grid = torch.stack([to_rgb(c) for c in columns], 1).flatten(0, 1)
    pictures = {"inpainting": make_grid(grid.cpu(), nrow=len(columns), padding=2, pad_value=1.0)}
    if model.vae is not None:
        pictures["traversal"] = traversal(model, images[:1], masks[:1],
                                          decomposition.background)
    return pictures


@torch.no_grad()
def traversal(model, image: Tensor, masks: Tensor, background: Tensor) -> Tensor:
    """Sweep the dimensions of one object's z_k with the largest posterior |mean| spread
    (those in use) and decode the fused image; the other objects keep their factors."""
    mean, logvar = model.vae.encode(image, masks)  # [1, K, D]
    area = masks.sum((0, 2, 3)).masked_fill(background.to(masks.device), -1)
    k = int(area.argmax())
    kl = 0.5 * (mean[0, k].square() + logvar[0, k].exp() - logvar[0, k] - 1)
    dims = kl.argsort(descending=True)[:TRAVERSED_DIMENSIONS]
    rows = []
    for d in dims:
        z = mean.repeat(len(TRAVERSAL_VALUES), 1, 1)
        z[:, k, d] = TRAVERSAL_VALUES.to(z)
        rows.append(model.vae.decode(z)[2])
    grid = to_rgb(torch.cat(rows))
    return make_grid(grid.cpu(), nrow=len(TRAVERSAL_VALUES), padding=2, pad_value=1.0)
