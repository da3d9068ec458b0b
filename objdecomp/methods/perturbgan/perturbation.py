"""The perturbations of §3.2 and §4: the random shift of Eq. 2, the background contrast jitter
(Table 1 row d) and the random crops of the real images.

All are vectorised over the batch (one gather per tensor, no per-image loop).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def shift_images(images: Tensor, shifts: Tensor) -> Tensor:
    """Moves image ``b`` by ``shifts[b] = (dx, dy)`` pixels (x right, y down), zero-filling
    what comes in from outside: ``out[p] = images[p − shift]``."""
    b, c, h, w = images.shape
    pad = int(shifts.abs().max()) if shifts.numel() else 0
    if pad == 0:
        return images
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = (pad - shifts[:, 1])[:, None] + torch.arange(h, device=images.device)  # [B, H]
    cols = (pad - shifts[:, 0])[:, None] + torch.arange(w, device=images.device)  # [B, W]
    index = torch.arange(b, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def random_shifts(batch_size: int, max_shift: float, device=None) -> Tensor:
    """Integer shifts ``[B, 2]``, each ``round(U(−max_shift, max_shift))`` (Δ of Eq. 2)."""
    return torch.round((torch.rand(batch_size, 2, device=device) * 2 - 1) * max_shift).long()


def shift_object(foreground: Tensor, mask: Tensor, max_shift: float) -> Tuple[Tensor, Tensor]:
    """Eq. 2: the foreground and its mask moved together by one random Δ per image, unknown to
    the generator; the background is not moved."""
    shifts = random_shifts(foreground.shape[0], max_shift, foreground.device)
    moved = shift_images(torch.cat([foreground, mask], dim=1), shifts)
    return moved[:, :-1], moved[:, -1:]


def contrast_jitter(images: Tensor, low: float, high: float) -> Tensor:
    """Scales each image's deviations from its per-channel mean by c ~ U(low, high) (one c per
    image), then clamps to each channel's original range (the authors' code does both)."""
    c = torch.empty(images.shape[0], 1, 1, 1, device=images.device,
                    dtype=images.dtype).uniform_(low, high)
    mean = images.mean(dim=(2, 3), keepdim=True)
    lo = images.amin(dim=(2, 3), keepdim=True)
    hi = images.amax(dim=(2, 3), keepdim=True)
    return torch.maximum(torch.minimum((images - mean) * c + mean, hi), lo)


def resize_and_crop(images: Tensor, resolution: int, scale: float = 1.125,
                    random_crop: bool = True) -> Tensor:
    """Real images for training at ``resolution`` (§4): resized to a ``scale · resolution``
    square, then one random ``resolution`` crop per image (``random_crop=False``, Table 1 row
    e: resized straight to ``resolution``)."""
    if not random_crop or scale <= 1:
        return _resize(images, resolution)
    size = int(round(scale * resolution))
    resized = _resize(images, size)
    room = size - resolution
    offsets = torch.randint(0, room + 1, (images.shape[0], 2), device=images.device)
    # a crop at offset o is a shift by -o followed by taking the top-left corner
    b = images.shape[0]
    rows = offsets[:, 1, None] + torch.arange(resolution, device=images.device)
    cols = offsets[:, 0, None] + torch.arange(resolution, device=images.device)
    index = torch.arange(b, device=images.device)[:, None, None]
    return resized.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _resize(images: Tensor, size: int) -> Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)
