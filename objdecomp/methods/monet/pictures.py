"""MONet's latent traversals (Burgess et al. 2019, Fig. 5; CIS Fig. 6-7 for its own model).

One slot of one image (the foreground slot owning most pixels): each of its most informative latent dimensions (largest KL to the
prior) is swept over [−range, range] while the other slots keep their posterior means; the
scene is recomposed from the decoded masks m̃ = softmax_k(mask logits), as MONet's figures
do, so a dimension that codes position moves the object; a second row shows the slot alone.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.utils import make_grid


@torch.no_grad()
def latent_traversal(model, image: Tensor, dims: int = 4, steps: int = 7,
                     extent: float = 2.0) -> Tensor:
    """``[3, H', W']`` grid, a column per value and two rows per latent dimension: the scene
    recomposed with the decoded masks, and the traversed slot alone.

    Args:
        model: a :class:`~objdecomp.methods.monet.module.MONetBase`.
        image: ``[1, C, H, W]``.
        dims: how many dimensions of the slot (those of largest KL).
        steps, extent: the values, ``steps`` evenly in [−extent, extent].
    """
    x = model.working_images(image)
    log_masks = model.log_masks(x)
    mean, logvar = model.vae.encode(x, log_masks)
    # The foreground slot owning most pixels (argmax, not soft area: a diffuse slot can hold
    # much soft mass and no object).
    areas = torch.bincount(log_masks[0].argmax(0).flatten(), minlength=model.num_slots)
    slot = int(areas[1:].argmax()) + 1 if model.num_slots > 1 else 0
    kl = 0.5 * (mean[0, slot] ** 2 + logvar[0, slot].exp() - logvar[0, slot] - 1)
    chosen = kl.argsort(descending=True)[:dims]
    values = torch.linspace(-extent, extent, steps, device=image.device)
    z = mean.expand(len(chosen) * steps, -1, -1).clone()  # [R*S, K, latent]
    for row, dim in enumerate(chosen):
        z[row * steps:(row + 1) * steps, slot, dim] = values
    means, mask_logits = model.vae.decode(z)
    masks = mask_logits.softmax(1)
    scenes = (masks[:, :, None] * means).sum(1)
    # The slot alone: its means over white, its decoded mask rescaled to a peak of 1 (early in
    # training the decoded masks are diffuse and the scene alone barely shows the slot).
    alpha = masks[:, slot, None]
    alpha = alpha / alpha.amax((2, 3), keepdim=True).clamp_min(1e-6)
    alone = alpha * means[:, slot] + (1 - alpha)
    if scenes.shape[1] == 1:
        scenes, alone = scenes.expand(-1, 3, -1, -1), alone.expand(-1, 3, -1, -1)
    rows = torch.stack([scenes.unflatten(0, (-1, steps)), alone.unflatten(0, (-1, steps))], 1)
    return make_grid(rows.flatten(0, 2).clamp(0, 1), nrow=steps, padding=2, pad_value=1.0)
