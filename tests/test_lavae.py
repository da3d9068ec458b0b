"""LAVAE's own checks (Dittadi & Winther 2019): sprite placement (Eq. 4), f_count, sampling
locations without replacement (Eq. 3, 8, 11) and its exact log-probabilities, the KL terms
against Monte-Carlo estimates, and the importance-sampled bound on a tiny model."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from objdecomp.methods.lavae import LAVAE
from objdecomp.methods.lavae.inference import (count_objects, paste_sprites, place_sprites,
                                               prior_location_log_prob, sample_locations,
                                               set_log_prob)
from objdecomp.nn.vae import gaussian_kl


def one_hot_map(row: int, col: int, size: int = 8) -> torch.Tensor:
    location = torch.zeros(1, size, size)
    location[0, row, col] = 1.0
    return location


def test_sprite_lands_centred_on_its_location():
    sprite = torch.arange(1.0, 10.0).view(1, 1, 3, 3)  # values 1..9, centre 5
    placed = place_sprites(sprite, one_hot_map(4, 5))[0, 0]
    assert torch.allclose(placed[3:6, 4:7], sprite[0, 0], atol=1e-5)
    assert placed.sum().item() == pytest.approx(45.0, abs=1e-4)  # nothing anywhere else


def test_sprite_is_cropped_at_the_borders():
    sprite = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    corner = place_sprites(sprite, one_hot_map(0, 0))[0, 0]
    assert torch.allclose(corner[:2, :2], sprite[0, 0, 1:, 1:], atol=1e-5)  # 5 6 / 8 9 remain
    assert corner.sum().item() == pytest.approx(5 + 6 + 8 + 9, abs=1e-4)
    far = place_sprites(sprite, one_hot_map(7, 7))[0, 0]
    assert torch.allclose(far[6:, 6:], sprite[0, 0, :2, :2], atol=1e-5)


def test_paste_equals_the_convolution_with_one_hot_maps():
    torch.manual_seed(0)
    sprites = torch.rand(5, 3, 5, 5)
    locations = torch.tensor([0, 7, 27, 63, 36])
    owners = torch.tensor([0, 0, 1, 1, 1])
    maps = torch.zeros(5, 64)
    maps[torch.arange(5), locations] = 1
    placed = place_sprites(sprites, maps.view(5, 8, 8))
    expected = torch.stack([placed[:2].sum(0), placed[2:].sum(0)])
    assert torch.allclose(paste_sprites(sprites, locations, owners, 2, 8, 8), expected, atol=1e-5)


def test_f_count_counts_local_maxima_above_the_threshold():
    h = torch.zeros(3, 8, 8)
    h[0, 1, 1], h[0, 5, 5], h[0, 5, 6] = 20.0, 18.0, 17.0  # the second blob has one maximum
    h[0, 2, 6] = 10.0                                       # a maximum below the threshold
    h[1, 3, 3] = h[1, 3, 4] = 20.0                          # a tie: both points are maxima
    h[1, 6, 1] = 16.0                                       # at the threshold: not above it
    h[2, ::2, ::2] = 20.0                                   # 16 separated peaks, clamped to M
    counts = count_objects(h, threshold=16.0, max_count=10)
    assert counts.tolist() == [2, 2, 10]
    assert count_objects(h[:1], threshold=16.0, max_count=1)[0] == 1


def test_sampling_without_replacement_never_repeats_and_relaxes_to_the_indices():
    torch.manual_seed(0)
    logits = torch.randn(64, 9) * 3
    indices, log_b, relaxed = sample_locations(logits, 9, tau=0.05)
    assert all(len(set(row.tolist())) == 9 for row in indices)  # a permutation every time
    assert torch.equal(relaxed.argmax(-1), indices)
    # Each step's categorical excludes the earlier locations (Eq. 11).
    chosen_before = log_b[:, 1:].exp().gather(2, indices[:, :1, None].expand(-1, 8, 1))
    assert chosen_before.max() < 1e-30


def test_sampled_sets_follow_the_exact_set_probabilities():
    """The Gumbel-top-k draws have the distribution that set_log_prob sums over orders."""
    torch.manual_seed(1)
    d, n, draws = 5, 2, 40000
    logits = torch.tensor([[1.5, 0.2, -0.5, 0.9, 0.0]])
    indices, _, _ = sample_locations(logits.expand(draws, -1), n, relaxed=False)
    sets = list(itertools.combinations(range(d), n))
    exact = torch.stack([set_log_prob(logits, torch.tensor([s]), torch.tensor([n])).exp()[0]
                         for s in sets])
    assert exact.sum().item() == pytest.approx(1.0, abs=1e-9)  # a distribution over sets
    sorted_draws = indices.sort(1).values
    empirical = torch.tensor([((sorted_draws == torch.tensor(s)).all(1)).float().mean()
                              for s in sets], dtype=torch.float64)
    assert torch.allclose(empirical, exact, atol=0.01)


def test_set_log_prob_sums_the_orders_of_sequential_sampling():
    logits = torch.tensor([[0.3, -1.0, 2.0, 0.5, 1.1, -0.2]])
    probs = logits.double().softmax(-1)[0]
    chosen = [4, 0, 2]
    brute = 0.0
    for order in itertools.permutations(chosen):
        p, taken = 1.0, 0.0
        for k in order:
            p *= probs[k] / (1 - taken)
            taken += probs[k]
        brute += p
    got = set_log_prob(logits, torch.tensor([chosen + [1]]), torch.tensor([3])).exp()
    assert got.item() == pytest.approx(float(brute), rel=1e-9)


def test_prior_over_location_sets_is_normalised():
    d = 6
    for n in range(4):
        log_p = prior_location_log_prob(torch.tensor([n]), d, unordered=True)
        assert (log_p.exp() * math.comb(d, n)).item() == pytest.approx(1.0, rel=1e-9)
        ordered = prior_location_log_prob(torch.tensor([n]), d, unordered=False)
        assert (ordered.exp() * math.perm(d, n)).item() == pytest.approx(1.0, rel=1e-9)


def test_location_kl_matches_its_monte_carlo_estimate():
    """Appendix A's location term: E_q[Σ_i log q(z_i | z_<i) − log p(z_i | z_<i)] by
    enumeration of every ordered pair, against the mean of the hard-sample estimate."""
    torch.manual_seed(2)
    d, n = 6, 2
    logits = torch.randn(1, d)
    p = logits.softmax(-1)[0].double()
    exact = 0.0
    for i, j in itertools.permutations(range(d), n):
        q = p[i] * p[j] / (1 - p[i])
        exact += q * (torch.log(q) + math.log(d) + math.log(d - 1))
    indices, log_b, _ = sample_locations(logits.expand(100000, -1), n, relaxed=False)
    log_q = log_b.gather(2, indices[..., None])[..., 0].sum(1)
    estimate = (log_q + math.log(d) + math.log(d - 1)).double().mean()
    assert estimate.item() == pytest.approx(exact.item(), abs=0.01)


def test_appearance_kl_matches_its_monte_carlo_estimate():
    torch.manual_seed(3)
    mean, logvar = torch.randn(1, 4), torch.randn(1, 4) * 0.5
    z = mean + (0.5 * logvar).exp() * torch.randn(200000, 4)
    log_q = (-0.5 * (math.log(2 * math.pi) + logvar + (z - mean) ** 2 / logvar.exp())).sum(1)
    log_p = (-0.5 * (math.log(2 * math.pi) + z ** 2)).sum(1)
    assert (log_q - log_p).mean().item() == pytest.approx(gaussian_kl(mean, logvar).item(),
                                                          abs=0.02)


def tiny_model() -> LAVAE:
    torch.manual_seed(0)
    model = LAVAE(image_size=16, channels=1, max_objects=3, max_count=4, latent_dim=4,
                  sprite_size=5, width=4, blocks=1, sprite_width=4, aux_width=4, aux_side=2,
                  gamma=1.0, count_threshold=-1e9)  # every local maximum counts
    return model.eval()


def test_importance_bound_is_below_the_elbo_and_tightens_with_more_samples():
    model = tiny_model()
    images = (torch.rand(4, 1, 16, 16) > 0.8).float()
    batch = {"image": images}
    bounds = {}
    with torch.no_grad():
        assert model.infer(images)["n"].min() >= 1  # the bound then covers locations and sprites
        for k in (1, 10, 200):
            model.hparams.importance_samples = k
            torch.manual_seed(5)
            bounds[k] = model.score_images(batch, model.decompose(images))
    for k, values in bounds.items():
        assert (values["nll_bound"] <= values["neg_elbo"] + 1e-3).all(), k
    assert torch.allclose(bounds[1]["nll_bound"], bounds[1]["neg_elbo"])
    assert (bounds[200]["nll_bound"].mean() < bounds[10]["nll_bound"].mean()
            < bounds[1]["nll_bound"].mean())
    # The ELBO estimate does not depend on K (in expectation): it stays near the 200-sample one.
    assert (bounds[10]["neg_elbo"] - bounds[200]["neg_elbo"]).abs().mean() < \
        0.5 * (bounds[200]["neg_elbo"] - bounds[200]["nll_bound"]).mean() + 5.0


def test_prior_samples_have_the_requested_number_of_objects():
    model = tiny_model()
    with torch.no_grad():
        model.count_logits.copy_(torch.tensor([-1e9, -1e9, 0.0, -1e9, -1e9]))  # p(n = 2) = 1
        images = model.sample(6)
        forced = model.sample(3, torch.tensor([4, 4, 4]))
    assert images.shape == (6, 1, 16, 16) and forced.shape == (3, 1, 16, 16)
    assert (images >= 0).all() and (images <= 1).all()


def test_kl_map_lands_where_its_latent_cell_looks():
    """Warm-up target (App. B): a latent cell's KL sits on the pixels that cell sees, the
    centre of its receptive field (found from the gradient of the cell's mean)."""
    from objdecomp.methods.lavae.networks import AuxiliaryVAE

    torch.manual_seed(0)
    aux = AuxiliaryVAE(channels=1, image_size=64, width=4, latent=2, side=11).eval()
    image = torch.rand(1, 1, 64, 64, requires_grad=True)
    for cell in ((3, 4), (5, 7), (8, 6)):  # inside: the image border biases the gradient
        mean, _ = aux.encoder(image).chunk(2, 1)
        (grad,) = torch.autograd.grad(mean[0, :, cell[0], cell[1]].sum(), image)
        weight = grad[0, 0].abs()
        rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
        seen = ((weight * rows).sum() / weight.sum(), (weight * cols).sum() / weight.sum())
        one_hot = torch.zeros(1, 1, 11, 11)
        one_hot[0, 0, cell[0], cell[1]] = 1.0
        target = aux.kl_map_on_pixels(one_hot)[0]
        assert target.shape == (64, 64)
        peak = torch.nonzero(target == target.max()).float().mean(0)
        assert abs(peak[0] - seen[0]) < 2.0 and abs(peak[1] - seen[1]) < 2.0, (cell, peak, seen)
