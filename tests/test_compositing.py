"""Layered compositing (DTI-Sprites Eq. 1-2) against hand-computed cases."""

import torch

from objdecomp.compositing import (add_background, candidate_composites, composite,
                                   fixed_occlusion, occlusion_from_values, over, ownership,
                                   partition)


def _layers(values, alphas):
    """One-pixel grey layers: colours and alphas [1, L, 1, 1, 1] from lists."""
    colors = torch.tensor(values, dtype=torch.float64).view(1, -1, 1, 1, 1)
    return colors, torch.tensor(alphas, dtype=torch.float64).view(1, -1, 1, 1, 1)


def test_two_layers_is_alpha_blending():
    colors, alphas = _layers([0.2, 0.9], [1.0, 0.3])
    image, weights = composite(colors, alphas, fixed_occlusion(2).double())
    assert torch.allclose(image, torch.tensor(0.3 * 0.9 + 0.7 * 0.2, dtype=torch.float64))
    assert torch.allclose(image, over(colors[:, 1], alphas[:, 1], colors[:, 0]))
    assert torch.allclose(weights.flatten(), torch.tensor([0.7, 0.3], dtype=torch.float64))


def test_three_layers_match_recursive_composition():
    # Eq. 1 by hand: c1 = 0.1; c2 = 0.5·0.6 + 0.5·0.1 = 0.35; c3 = 0.25·0.8 + 0.75·0.35 = 0.4625.
    colors, alphas = _layers([0.1, 0.6, 0.8], [1.0, 0.5, 0.25])
    image, weights = composite(colors, alphas, fixed_occlusion(3).double())
    assert abs(image.item() - 0.4625) < 1e-12
    # Visible weights: 1·0.5·0.75, 0.5·0.75, 0.25; they sum to 1 with an opaque back layer.
    assert torch.allclose(weights.flatten(), torch.tensor([0.375, 0.375, 0.25], dtype=torch.float64))


def test_reversed_order_puts_first_layer_in_front():
    colors, alphas = _layers([0.1, 0.6, 0.8], [1.0, 1.0, 1.0])
    image, _ = composite(colors, alphas, fixed_occlusion(3).double().T)  # δ_jl = 1[j < l]
    assert abs(image.item() - 0.1) < 1e-12


def test_non_transitive_occlusion():
    # 0 occludes 1, 1 occludes 2, 2 occludes 0: each layer is hidden by exactly one other.
    delta = torch.tensor([[0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=torch.float64)
    colors, alphas = _layers([0.2, 0.4, 0.8], [0.5, 0.5, 0.5])
    image, weights = composite(colors, alphas, delta)
    assert torch.allclose(weights.flatten(), torch.full((3,), 0.25, dtype=torch.float64))
    assert abs(image.item() - 0.25 * (0.2 + 0.4 + 0.8)) < 1e-12
    # Opaque layers in a cycle hide each other completely; ownership still sums to 1.
    _, weights = composite(colors, torch.ones_like(alphas), delta)
    assert weights.abs().max() == 0
    masks = ownership(weights)
    assert torch.allclose(masks.sum(1), torch.ones(1, 1, 1, dtype=torch.float64))


def test_occlusion_from_values_is_antisymmetric_with_zero_diagonal():
    values = torch.tensor([[0.9, 0.2, 0.7]])
    delta = occlusion_from_values(values, 3)
    # Lower triangle in row-major order: δ_10, δ_20, δ_21.
    assert torch.allclose(delta[0, [1, 2, 2], [0, 0, 1]], values[0])
    assert torch.allclose(delta + delta.transpose(1, 2), 1 - torch.eye(3))
    full = add_background(delta)
    assert full.shape == (1, 4, 4)
    assert torch.equal(full[0, 1:, 0], torch.ones(3)) and torch.equal(full[0, 0], torch.zeros(4))


def test_binary_occlusion_of_lower_ones_is_fixed_order():
    assert torch.equal(occlusion_from_values(torch.ones(1, 6), 4)[0], fixed_occlusion(4))


def test_candidate_composites_equal_full_recomposition():
    torch.manual_seed(0)
    b, num_layers, m, c, h, w = 2, 4, 5, 3, 6, 7
    colors, alphas = torch.rand(b, num_layers, c, h, w), torch.rand(b, num_layers, 1, h, w)
    alphas[:, 0] = 1
    occlusion = add_background(occlusion_from_values(torch.rand(b, 3), 3))
    cand_colors, cand_alphas = torch.rand(b, m, c, h, w), torch.rand(b, m, 1, h, w)
    for layer in range(num_layers):
        fast = candidate_composites(cand_colors, cand_alphas, layer, colors, alphas, occlusion)
        for k in range(m):
            swapped_c, swapped_a = colors.clone(), alphas.clone()
            swapped_c[:, layer], swapped_a[:, layer] = cand_colors[:, k], cand_alphas[:, k]
            slow, _ = composite(swapped_c, swapped_a, occlusion)
            assert torch.allclose(fast[:, k], slow, atol=1e-6), (layer, k)


def test_partition_is_mask_weighted_sum():
    colors = torch.rand(2, 3, 3, 4, 4)
    masks = torch.softmax(torch.randn(2, 3, 1, 4, 4), dim=1)
    expected = masks[:, 0] * colors[:, 0] + masks[:, 1] * colors[:, 1] + masks[:, 2] * colors[:, 2]
    assert torch.allclose(partition(colors, masks), expected)
