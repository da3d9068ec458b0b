"""CIS's losses (Yang et al. 2020, Sec. 3): contextual information separation (Eq. 5), the
inpainter's pre-training boxes (Sec. 4.2), and the perceptual cycle-consistency (Eq. 11).

Shapes: images ``[B, C, H, W]``, soft masks ``[B, K, H, W]``, inpaintings ``[B, K, C, H, W]``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def region_error(prediction: Tensor, images: Tensor, masks: Tensor) -> Tensor:
    """⟨Ω_k, |prediction − x|⟩: the L1 error inside each soft mask, ``[B, K]``.

    ``prediction`` is ``[B, K, C, H, W]`` (one per mask) or ``[B, C, H, W]`` (one for all).
    """
    if prediction.dim() == 4:
        prediction = prediction[:, None]
    return ((prediction - images[:, None]).abs() * masks[:, :, None]).sum((2, 3, 4))


def inpainter_loss(inpainted: Tensor, images: Tensor, masks: Tensor) -> Tensor:
    """ψ's objective: the inpainting error inside each mask, summed over the K masks and
    averaged over the batch and over the C·H·W entries of an image (the authors' code)."""
    per_mask = region_error(inpainted, images, masks).mean(0)
    return per_mask.sum() / images[0].numel()


def segmenter_loss(inpainted: Tensor, images: Tensor, masks: Tensor, epsilon: float,
                   unconditioned: Optional[Tensor] = None) -> Tensor:
    """Ω's side of Eq. 5: Σ_k mean_b [1 − ⟨Ω_k, |ψ_k − x|⟩ / (⟨Ω_k, n⟩ + ε)].

    Ω minimises it, i.e. maximises the normalised inpainting error L_SD (the −γ L_SD of
    Eq. 12). The normaliser n is |x| in Eq. 5; the authors' code uses the error of the
    unconditioned inpainting |ψ(∅) − x| instead (pass ``unconditioned``), which does not
    reward masks for covering dark pixels. Gradients reach Ω through the masks in the
    numerator (weights and ψ's context) and the denominator.
    """
    numerator = region_error(inpainted, images, masks)
    if unconditioned is None:
        denominator = (images.abs()[:, None] * masks[:, :, None]).sum((2, 3, 4))
    else:
        denominator = region_error(unconditioned, images, masks)
    return (1 - numerator / (denominator + epsilon)).mean(0).sum()


def random_boxes(images: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """ψ's pre-training masks ``[B, 2, H, W]``: a random rectangle and its complement, one
    rectangle for the batch (the authors' code): rows r1 ~ U{0, …, 2H/3 − 1},
    r2 ~ U{r1 + H/5, …, H − 2}, columns alike, the box covering [r1, r2) × [c1, c2)."""
    b, _, h, w = images.shape

    def span(n: int):
        first = int(torch.randint(0, 2 * n // 3, (), generator=generator))
        low = first + n // 5
        last = int(torch.randint(low, max(low + 1, n - 1), (), generator=generator))
        return first, last

    (r1, r2), (c1, c2) = span(h), span(w)
    box = images.new_zeros(h, w)
    box[r1:r2, c1:c2] = 1
    box = box.expand(b, h, w)
    return torch.stack([box, 1 - box], 1)


def cycle_consistency_loss(z: Tensor, z_perturbed: Tensor, z_cycle: Tensor, k: Tensor) -> Tensor:
    """Eq. 11: Σ_{l≠k} ||z_l − z̄_l||₁ + ||ẑ_k − z̄_k||₁, averaged over the batch.

    Args:
        z: ``[B, K, D]`` factors of the input's objects.
        z_perturbed: ``[B, D]`` ẑ_k, the perturbed factors of object k (Eq. 7).
        z_cycle: ``[B, K, D]`` z̄, the factors extracted from the synthesised image (Eq. 10).
        k: ``[B]`` the perturbed object of each image (Eq. 6).
    """
    target = z.clone()
    target[torch.arange(len(k), device=k.device), k] = z_perturbed
    return (target - z_cycle).abs().sum((1, 2)).mean()
