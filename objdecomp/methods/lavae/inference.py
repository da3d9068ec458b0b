"""LAVAE's discrete machinery (Dittadi & Winther 2019, §2 and appendix B): placing sprites at
one-hot locations (Eq. 4), counting objects from the location logits (f_count), sampling
locations without replacement (Eq. 3, 8, 11) with the Gumbel-softmax relaxation, and the exact
log-probabilities of the sampled locations (for the importance-sampled bound of Table 1).

Locations are flat indices d = row · W + col into the D = H·W pixels; a location is the centre
of the sprite placed there.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

MASKED = -1e4  # logit of an already sampled location: exp(MASKED - max) is exactly 0 in float32


def place_sprites(sprites: Tensor, locations: Tensor) -> Tensor:
    """Eq. 4 per object: the 2-D discrete convolution of each sprite with its location map.

    Args:
        sprites: ``[P, C, S, S]`` with S odd.
        locations: ``[P, H, W]`` one-hot location maps, or their Gumbel-softmax relaxation (the
            convolution is what carries the gradient to the locations during training).

    Returns:
        ``[P, C, H, W]``: each sprite centred on its location, cropped at the borders.
    """
    p, c, s, _ = sprites.shape
    if s % 2 == 0:
        raise ValueError(f"sprites must have an odd size to be centred, got {s}")
    h, w = locations.shape[-2:]
    # The full linear convolution by FFT (zero-padded to H + S − 1), then the centred crop:
    # ~20x cheaper on CPU than a grouped conv2d with S×S kernels, the same result.
    size = (h + s - 1, w + s - 1)
    spectrum = torch.fft.rfft2(locations, s=size)[:, None] * torch.fft.rfft2(sprites, s=size)
    full = torch.fft.irfft2(spectrum, s=size)
    r = s // 2
    return full[..., r:r + h, r:r + w]


def paste_sprites(sprites: Tensor, locations: Tensor, owners: Tensor, num_images: int,
                  height: int, width: int) -> Tensor:
    """Eq. 4 summed per image for hard locations: equal to :func:`place_sprites` with one-hot
    maps, summed over each image's objects, at the cost of an index-add (evaluation).

    Args:
        sprites: ``[P, C, S, S]``; locations: ``[P]`` flat indices; owners: ``[P]`` image of
            each sprite in ``[0, num_images)``.

    Returns:
        ``[num_images, C, height, width]``.
    """
    p, c, s, _ = sprites.shape
    r = s // 2
    hp, wp = height + 2 * r, width + 2 * r
    rows, cols = locations // width, locations % width  # top-left corner in the padded canvas
    offsets = torch.arange(s, device=sprites.device)
    flat = (rows[:, None, None] + offsets[:, None]) * wp + cols[:, None, None] + offsets
    flat = flat + (owners * hp * wp)[:, None, None]
    canvas = sprites.new_zeros(num_images * hp * wp, c)
    canvas.index_add_(0, flat.flatten(), sprites.permute(0, 2, 3, 1).reshape(-1, c))
    canvas = canvas.view(num_images, hp, wp, c).permute(0, 3, 1, 2)
    return canvas[:, :, r:r + height, r:r + width]


def count_objects(h_loc: Tensor, threshold: float, max_count: int, window: int = 3) -> Tensor:
    """f_count (appendix B): local maxima of ``h_loc`` ``[B, H, W]`` above ``threshold``.

    A point is a local maximum when it equals the maximum of its ``window × window``
    neighbourhood. Returns n̂ ``[B]`` int64, at most ``max_count`` (M).
    """
    pooled = F.max_pool2d(h_loc[:, None], window, 1, window // 2)[:, 0]
    peaks = (h_loc >= pooled) & (h_loc > threshold)
    return peaks.flatten(1).sum(1).clamp(max=max_count)


def gumbel_like(logits: Tensor) -> Tensor:
    uniform = torch.rand_like(logits).clamp(1e-20, 1 - 1e-7)
    return -torch.log(-torch.log(uniform))


def sample_locations(logits: Tensor, num_slots: int, tau: float = 1.0, relaxed: bool = True
                     ) -> Tuple[Tensor, Tensor, Tensor]:
    """Sample ``num_slots`` locations without replacement from Cat(softmax(logits)) (Eq. 8, 11).

    One Gumbel perturbation of the logits serves every step: its top-k indices are an exact
    draw of k locations without replacement in order (the Gumbel-top-k trick), and step i's
    Gumbel-softmax relaxation uses the same noise with the i − 1 earlier locations masked, so
    its argmax is the i-th index (appendix B: "all the logits of the previously sampled
    location are set to a low value").

    Args:
        logits: ``[B, D]`` (h_loc, flattened).
        num_slots: N ≤ D.
        tau: temperature of the relaxation.
        relaxed: also return the relaxed samples (training); otherwise the third value is empty.

    Returns:
        indices ``[B, N]``; log-probabilities ``[B, N, D]`` of each step's categorical (log b^(i),
        Eq. 11; MASKED-level at earlier locations); relaxed one-hot samples ``[B, N, D]``.
    """
    noise = gumbel_like(logits)
    indices = (logits + noise).topk(num_slots, dim=1).indices if num_slots else \
        logits.new_zeros(len(logits), 0, dtype=torch.long)
    earlier = torch.zeros(len(logits), num_slots, logits.shape[1], dtype=torch.bool,
                          device=logits.device)
    for i in range(1, num_slots):
        earlier[:, i] = earlier[:, i - 1]
        earlier[:, i].scatter_(1, indices[:, i - 1:i], True)
    masked = logits[:, None].masked_fill(earlier, MASKED)
    log_b = masked.log_softmax(-1)
    samples = ((masked + noise[:, None]) / tau).softmax(-1) if relaxed else logits.new_zeros(0)
    return indices, log_b, samples


def prior_location_log_prob(n: Tensor, num_locations: int, unordered: bool) -> Tensor:
    """log p(z_loc | n) of Eq. 3 (uniform without replacement over D): −Σ_{i<n} log(D − i),
    plus log n! for the unordered set (each of its n! orders is equally likely)."""
    n = n.double()
    log_prob = -(math.lgamma(num_locations + 1.0) - torch.lgamma(num_locations - n + 1))
    return log_prob + torch.lgamma(n + 1) if unordered else log_prob


@lru_cache(maxsize=16)
def _subset_tables(num_slots: int) -> Tuple[Tensor, Tensor, Tensor]:
    subsets = torch.arange(2 ** num_slots)
    bits = (subsets[:, None] >> torch.arange(num_slots)) & 1  # [2^N, N]
    previous = subsets[:, None] ^ (1 << torch.arange(num_slots))  # S without slot k
    return bits.bool(), previous, bits.sum(1)


def set_log_prob(logits: Tensor, indices: Tensor, n: Tensor) -> Tensor:
    """log q({z_loc^(1..n)} | x): the probability of the first ``n`` of ``indices`` as a set,
    summed over their n! orders of sequential sampling without replacement (Eq. 8, 11).

    A dynamic programme over subsets (2^N states, N = ``indices.shape[1]``), in float64:
    f(S) = Σ_{k∈S} f(S∖k) · p_k / (1 − P(S∖k)), with p the softmax of the logits.

    Args:
        logits: ``[B, D]``; indices: ``[B, N]`` distinct locations; n: ``[B]`` how many of
            them form the set (the first n).

    Returns:
        ``[B]`` float64.
    """
    num_slots = indices.shape[1]
    log_p = logits.double().log_softmax(-1).gather(1, indices)  # [B, N]
    bits, previous, sizes = (t.to(logits.device) for t in _subset_tables(num_slots))
    mass = log_p.exp() @ bits.double().T  # P(S) [B, 2^N]
    log_rest = torch.log1p(-mass.clamp(max=1.0)).clamp(min=-700.0)  # log(1 − P(S))
    log_f = torch.full_like(mass, -math.inf)
    log_f[:, 0] = 0.0
    for size in range(1, num_slots + 1):
        level = (sizes == size).nonzero()[:, 0]
        prev = previous[level]  # [m, N]
        terms = log_f[:, prev] + log_p[:, None, :] - log_rest[:, prev]  # [B, m, N]
        terms = terms.masked_fill(~bits[level], -math.inf)
        log_f[:, level] = terms.logsumexp(-1)
    return log_f.gather(1, ((1 << n) - 1)[:, None].long())[:, 0]
