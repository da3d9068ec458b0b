"""Layered alpha compositing with an occlusion matrix (DTI-Sprites, Monnier et al. 2021, Eq. 2).

Layers are ``colors`` ``[..., L, C, H, W]`` with transparencies ``alphas`` ``[..., L, 1, H, W]``
and an occlusion matrix ``occlusion`` ``[..., L, L]`` where ``occlusion[j, l] = δ_jl`` says how
much layer ``j`` occludes layer ``l``. Eq. 2 reads

    C_δ(o_1..o_L) = Σ_l  α_l c_l Π_{j≠l} (1 − δ_jl α_j).

With ``δ_jl = 1[j > l]`` this is the recursive "over" composition of Eq. 1 (layer L in front);
a predicted soft ``δ`` (Sec. 3.2) may even be non-transitive. The two-layer "foreground over
background" blend and the partition of an image by masks summing to one are special cases
(:func:`over` and :func:`partition`), shared with the other methods.

The greedy sprite selection of Algorithm 1 replaces one layer by each of its candidates while the
others stay fixed; :func:`candidate_terms` and :func:`candidate_composites` evaluate all
candidates of a layer at once from the parts of Eq. 2 that do not depend on that layer, instead
of recomposing every layer for every candidate.
"""

from __future__ import annotations

import torch
from torch import Tensor


def fixed_occlusion(num_layers: int, device=None) -> Tensor:
    """``[L, L]`` occlusion of a fixed depth order: ``δ_jl = 1[j > l]`` (later layers in front)."""
    return torch.ones(num_layers, num_layers, device=device).tril(diagonal=-1)


def occlusion_from_values(values: Tensor, num_layers: int) -> Tensor:
    """Occlusion matrix from ``L(L−1)/2`` values in [0, 1] per image (Sec. 3.2).

    The values fill the strictly lower triangle (``δ_ji`` for ``j > i``); the upper triangle is
    ``δ_ij = 1 − δ_ji`` and the diagonal is 0.

    Args:
        values: ``[B, L(L−1)/2]``, e.g. sigmoids of a network's outputs.
        num_layers: L.

    Returns:
        ``[B, L, L]`` occlusion matrices.
    """
    rows, cols = torch.tril_indices(num_layers, num_layers, offset=-1, device=values.device)
    lower = values.new_zeros(values.shape[0], num_layers, num_layers)
    lower[:, rows, cols] = values
    return lower + (1 - lower.transpose(1, 2)).triu(diagonal=1)


def add_background(occlusion: Tensor) -> Tensor:
    """Prepend a background layer 0 behind every layer: ``δ_j0 = 1`` for j ≥ 1, ``δ_0j = 0``.

    Sec. 3.2: "when we use a background model, its occlusion relationships are fixed".

    Args:
        occlusion: ``[..., L, L]`` occlusion of the object layers.

    Returns:
        ``[..., L+1, L+1]`` occlusion with the background as layer 0.
    """
    *batch, num_layers, _ = occlusion.shape
    full = occlusion.new_zeros(*batch, num_layers + 1, num_layers + 1)
    full[..., 1:, 1:] = occlusion
    full[..., 1:, 0] = 1
    return full


def transmittance(alphas: Tensor, occlusion: Tensor, exclude: int | None = None) -> Tensor:
    """``Π_{j≠l, j≠exclude} (1 − δ_jl α_j)``: how much of each layer ``l`` the others let through.

    Args:
        alphas: ``[B, L, 1, H, W]``.
        occlusion: ``[B, L, L]`` or ``[L, L]`` (``δ_ll`` must be 0).
        exclude: a layer left out of the product (treated as fully transparent).

    Returns:
        ``[B, L, 1, H, W]``.
    """
    delta = occlusion.expand(alphas.shape[0], -1, -1)[..., None, None, None]  # [B, L(j), L(l), 1, 1, 1]
    result = torch.ones_like(alphas)
    # A loop over the L occluding layers (never over pixels or candidates): L multiplies of
    # [B, L, 1, H, W], so no [B, L, L, H, W] intermediate is ever held. Rows of δ that are all
    # zero (a layer occluding nothing, e.g. the background) are skipped.
    num_layers = alphas.shape[1]
    occluders = (occlusion != 0).reshape(-1, num_layers, num_layers).any(2).any(0)
    one = torch.ones_like(alphas[:, :1])
    for j in occluders.nonzero().flatten().tolist():
        if j != exclude:
            result = result * torch.addcmul(one, delta[:, j], alphas[:, j : j + 1], value=-1)
    return result


def composite(colors: Tensor, alphas: Tensor, occlusion: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. 2: the composite image and each layer's visible weight ``α_l Π_{j≠l}(1 − δ_jl α_j)``.

    Args:
        colors: ``[B, L, C, H, W]`` layer appearances.
        alphas: ``[B, L, 1, H, W]`` layer transparencies in [0, 1].
        occlusion: ``[B, L, L]`` or ``[L, L]``.

    Returns:
        ``(image [B, C, H, W], weights [B, L, 1, H, W])``. With an opaque layer behind all
        others and a binary transitive ``δ`` the weights sum to 1 over layers.
    """
    weights = alphas * transmittance(alphas, occlusion)
    return (weights * colors).sum(1), weights


def ownership(weights: Tensor, eps: float = 1e-6) -> Tensor:
    """Normalise composited weights ``[B, L, 1, H, W]`` into masks ``[B, L, H, W]`` summing to 1.

    Soft or non-transitive occlusions can leave a pixel's weights summing to less than 1 (even
    0 when three layers occlude each other in a cycle); a small uniform share keeps the masks a
    partition there without changing them elsewhere.
    """
    weights = weights.squeeze(2) + eps
    return weights / weights.sum(1, keepdim=True)


def candidate_terms(layer: int, colors: Tensor, alphas: Tensor, occlusion: Tensor
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """The parts of Eq. 2 that do not depend on what layer ``layer`` holds.

    Eq. 2 is affine in the replaced layer's alpha ``a`` and premultiplied colour ``a c``:
    with ``P`` the transmittance of the other layers onto ``layer``, ``R_m`` the visible
    contribution of layer m ≠ ``layer`` when ``layer`` is transparent, ``A = Σ_m R_m`` and
    ``D = Σ_m δ_{layer,m} R_m``,

        C_δ(..., (c, a), ...) = A + a (c P − D).

    ``A``, ``D`` and ``P`` cost O(L²) image products once per layer; each candidate then
    costs a few elementwise operations instead of a full L-layer composition (the authors'
    code recomposes all layers for every candidate: 126 compositions per CLEVR6 step).

    Args:
        layer: index of the replaced layer.
        colors, alphas: ``[B, L, C, H, W]`` and ``[B, L, 1, H, W]``, the current layers (the
            entry at ``layer`` is ignored).
        occlusion: ``[B, L, L]`` or ``[L, L]``.

    Returns:
        ``(A [B, 1, C, H, W], D [B, 1, C, H, W], P [B, 1, 1, H, W])``, shaped to broadcast
        against candidates ``[B, M, ...]``.
    """
    b, num_layers = alphas.shape[:2]
    others = transmittance(alphas, occlusion, exclude=layer)  # [B, L, 1, H, W]
    visible = colors * (alphas * others)  # R_m (R_layer is dropped by the weights below)
    # A and D in one batched matrix product over layers: weights [B, 2, L] = (1[m ≠ layer], δ_layer,m).
    keep = torch.ones(num_layers, dtype=visible.dtype, device=visible.device)
    keep[layer] = 0
    weights = torch.stack([keep.expand(b, -1), occlusion.expand(b, -1, -1)[:, layer].to(visible.dtype)], 1)
    sums = torch.bmm(weights, visible.flatten(2)).view(b, 2, 1, *visible.shape[2:])
    return sums[:, 0], sums[:, 1], others[:, layer : layer + 1]


def candidate_composites(candidate_colors: Tensor, candidate_alphas: Tensor, layer: int,
                         colors: Tensor, alphas: Tensor, occlusion: Tensor) -> Tensor:
    """Composites of Eq. 2 with layer ``layer`` replaced by each of M candidates, in one batch.

    Args:
        candidate_colors: ``[B, M, C, H, W]`` (or broadcastable) appearances of the candidates.
        candidate_alphas: ``[B, M, 1, H, W]`` (or broadcastable) their transparencies.
        layer, colors, alphas, occlusion: as :func:`candidate_terms`.

    Returns:
        ``[B, M, C, H, W]`` composites.
    """
    rest, hidden, through = candidate_terms(layer, colors, alphas, occlusion)
    return rest + candidate_alphas * (candidate_colors * through - hidden)


def over(foreground: Tensor, alpha: Tensor, background: Tensor) -> Tensor:
    """Two-layer case of Eq. 1: ``α f + (1 − α) b`` (e.g. ReDO, PerturbGAN)."""
    return alpha * foreground + (1 - alpha) * background


def partition(colors: Tensor, masks: Tensor) -> Tensor:
    """Partition case: ``Σ_k m_k c_k`` for ``masks`` ``[B, K, 1, H, W]`` summing to 1 over K."""
    return (masks * colors).sum(1)
