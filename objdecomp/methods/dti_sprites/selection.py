"""Sprite selection: the minimum over (k_1..k_L) in Eq. 5, greedy (Algorithm 1) or exhaustive.

Both take every candidate layer already rendered and return, per image, the background
prototype and the sprite of each layer. No gradient flows through the selection: it only picks
indices; the loss is then recomputed on the chosen layers. The candidates of a layer are
scored in one batched expression (:func:`objdecomp.compositing.candidate_terms`), never in a
Python loop over candidates.

Conventions: layer 0 is the background (opaque, behind every object layer); object sprite ids
are 0..K−1 and ``K`` is the empty sprite (alpha 0).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from objdecomp.compositing import candidate_terms


def _mse(images: Tensor, recon: Tensor) -> Tensor:
    """Per-image mean squared error over the last three dimensions (C, H, W)."""
    return (recon - images).square().flatten(-3).mean(-1)


def _candidate_mse(difference: Tensor, premultiplied: Tensor, alphas: Tensor, hidden: Tensor,
                   through: Tensor) -> Tensor:
    """MSE of ``rest + a (c P − D)`` against the image, given ``difference = rest − image``.

    Written as two fused multiply-adds and one norm so that the biggest tensor of the step,
    ``[..., M, C, H, W]``, is traversed three times (a plain expression takes seven passes).
    """
    error = torch.addcmul(difference, premultiplied, through)
    error.addcmul_(alphas, hidden, value=-1)
    return torch.linalg.vector_norm(error, dim=(-3, -2, -1)).square() / error.shape[-3:].numel()


def _layer_scores(images: Tensor, premultiplied: Tensor, alphas: Tensor, layer: int,
                  cur_colors: Tensor, cur_alphas: Tensor, occlusion: Tensor, with_empty: bool) -> Tensor:
    """``[B, M (+1)]`` errors with ``layer`` replaced by each candidate (``premultiplied`` = αc
    ``[B, M, C, H, W]``), plus the empty layer (alpha 0) last when ``with_empty``."""
    rest, hidden, through = candidate_terms(layer, cur_colors, cur_alphas, occlusion)
    difference = rest - images[:, None]
    scores = _candidate_mse(difference, premultiplied, alphas, hidden, through)
    if with_empty:
        scores = torch.cat([scores, _mse(images[:, None], rest)], 1)
    return scores


def _empty_cost(k: int, penalty: float, like: Tensor) -> Tensor:
    """λ · 1[k ≠ empty] for the K sprites and the empty sprite (Eq. 5)."""
    return torch.cat([like.new_full((k,), penalty), like.new_zeros(1)])


@torch.no_grad()
def greedy_selection(images: Tensor, colors: Tensor, alphas: Tensor, backgrounds: Tensor,
                     occlusion: Tensor, iterations: int = 1, empty: bool = True,
                     penalty: float = 0.0) -> Tensor:
    """Algorithm 1: T passes over the layers, each taking its best candidate given the others.

    Args:
        images: ``[B, C, H, W]``.
        colors, alphas: ``[B, L, K, C, H, W]`` / ``[B, L, K, 1, H, W]``, every sprite in every layer.
        backgrounds: ``[B, K', C, H, W]`` transformed background prototypes (opaque); with
            K' > 1 the background is selected too, as layer 0 of each pass.
        occlusion: ``[B, L+1, L+1]``, background first.
        iterations: T (1 for Tetrominoes, 3 for Multi-dSprites and CLEVR6, Sec. 3.2).
        empty: the empty sprite is a candidate (not while sprites are frozen, C.2).
        penalty: λ of Eq. 5 per non-empty layer.

    Returns:
        ``[B, L+1]`` int64: the background prototype, then the sprite (or K) of each layer.
    """
    b, num_layers, k = colors.shape[:3]
    if num_layers < 1 or iterations < 1:
        raise ValueError("greedy selection needs at least one layer and one iteration")
    rows = torch.arange(b, device=images.device)
    # Algorithm 1's initialisation: the first background and empty object layers.
    cur_colors = torch.cat([backgrounds[:, :1], colors.new_zeros(b, num_layers, *colors.shape[3:])], 1)
    cur_alphas = torch.cat([alphas.new_ones(b, 1, *alphas.shape[3:]),
                            alphas.new_zeros(b, num_layers, *alphas.shape[3:])], 1)
    ids = torch.cat([rows.new_zeros(b, 1), rows.new_full((b, num_layers), k)], 1)
    cost = _empty_cost(k, penalty, colors) if empty else 0
    premultiplied = colors * alphas  # once per step: candidates do not change across passes
    for _ in range(iterations):
        if backgrounds.shape[1] > 1:
            scores = _layer_scores(images, backgrounds, torch.ones_like(backgrounds[:, :, :1]), 0,
                                   cur_colors, cur_alphas, occlusion, with_empty=False)
            ids[:, 0] = scores.argmin(1)
            cur_colors[:, 0] = backgrounds[rows, ids[:, 0]]
        for layer in range(1, num_layers + 1):
            scores = _layer_scores(images, premultiplied[:, layer - 1], alphas[:, layer - 1], layer,
                                   cur_colors, cur_alphas, occlusion, with_empty=empty)
            best = (scores + cost).argmin(1)  # ties go to the lowest index, as in the authors' code
            ids[:, layer] = best
            keep = (best < k).to(colors.dtype)[:, None, None, None]
            pick = best.clamp(max=k - 1)
            cur_colors[:, layer] = colors[rows, layer - 1, pick] * keep
            cur_alphas[:, layer] = alphas[rows, layer - 1, pick] * keep
    return ids


@torch.no_grad()
def exhaustive_selection(images: Tensor, colors: Tensor, alphas: Tensor, backgrounds: Tensor,
                         occlusion: Tensor, empty: bool = True, penalty: float = 0.0) -> Tensor:
    """The exact minimum of Eq. 5 over all K'·(K+1)^L selections (the ablation of Table 2).

    Each combination of the background and the first L−1 layers (a "prefix") is composed once;
    the last layer's candidates are scored against all prefixes in one broadcast expression.
    The cost is K'·(K+1)^(L−1) compositions per image: meant for small L (the paper uses it
    for L ≤ 2).

    Arguments and returns as :func:`greedy_selection`.
    """
    b, num_layers, k = colors.shape[:3]
    choices = range(k + 1 if empty else k)
    prefixes = torch.tensor(list(itertools.product(range(backgrounds.shape[1]),
                                                   *[choices] * (num_layers - 1))),
                            device=images.device).view(-1, num_layers)  # [P, L]
    p = prefixes.shape[0]
    background = backgrounds[:, prefixes[:, 0]]  # [B, P, C, H, W]
    layers_c, layers_a = [background], [torch.ones_like(background[:, :, :1])]
    for layer in range(1, num_layers):
        pick, keep = prefixes[:, layer].clamp(max=k - 1), (prefixes[:, layer] < k)
        keep = keep.to(colors.dtype)[None, :, None, None, None]
        layers_c.append(colors[:, layer - 1, pick] * keep)
        layers_a.append(alphas[:, layer - 1, pick] * keep)
    layers_c.append(torch.zeros_like(layers_c[0]))  # the last layer's slot, scored below
    layers_a.append(torch.zeros_like(layers_a[0]))
    cur_colors = torch.stack(layers_c, 2).flatten(0, 1)  # [B·P, L+1, C, H, W]
    cur_alphas = torch.stack(layers_a, 2).flatten(0, 1)
    occlusion = occlusion.repeat_interleave(p, 0)
    rest, hidden, through = (t.unflatten(0, (b, p)) for t in
                             candidate_terms(num_layers, cur_colors, cur_alphas, occlusion))
    last_a = alphas[:, -1, None]  # [B, 1, K, ...] against prefixes [B, P, 1, ...]
    scores = _candidate_mse(rest - images[:, None, None], colors[:, -1, None] * last_a, last_a,
                            hidden, through)  # [B, P, K]
    if empty:
        scores = torch.cat([scores, _mse(images[:, None, None], rest)], 2)
        prefix_count = (prefixes[:, 1:] < k).sum(1).to(scores.dtype)
        scores = scores + penalty * prefix_count[:, None] + _empty_cost(k, penalty, scores)
    flat = scores.flatten(1).argmin(1)
    last = flat % scores.shape[2]
    return torch.cat([prefixes[flat // scores.shape[2]], last[:, None]], 1)
