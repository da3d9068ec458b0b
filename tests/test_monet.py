"""MONet (objdecomp/methods/monet): the attention recursion, the VAE parts it shares in
objdecomp/nn/vae.py, and its loss against hand-computed oracles."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Categorical, Normal, kl_divergence

from objdecomp.methods.monet import MONet, MONetSegmentation
from objdecomp.nn.unet import AttentionUNet, recurrent_attention
from objdecomp.nn.vae import SpatialBroadcastDecoder, gaussian_pixel_log_likelihood

TINY = dict(image_size=16, max_objects=2, unet_channels=(4, 8), unet_mlp_hidden=8, latent_dim=3,
            encoder_widths=(4, 4), encoder_hidden=8, decoder_width=4, decoder_layers=2)


class FixedLogits(torch.nn.Module):
    """An "attention network" returning given logits, one per call."""

    def __init__(self, logits):
        super().__init__()
        self.logits, self.calls = list(logits), []

    def forward(self, images, log_scope):
        self.calls.append(log_scope.exp())
        return self.logits[len(self.calls) - 1]


def test_recurrent_attention_splits_the_scope_as_monet_states():
    a1, a2 = torch.rand(2, 1, 3, 3), torch.rand(2, 1, 3, 3)
    net = FixedLogits([torch.logit(a1), torch.logit(a2)])
    masks = recurrent_attention(net, torch.rand(2, 3, 3, 3), num_slots=3).exp()
    # m1 = α1, m2 = (1 − α1) α2, m3 = (1 − α1)(1 − α2); the second step sees the scope 1 − α1.
    torch.testing.assert_close(masks, torch.cat([a1, (1 - a1) * a2, (1 - a1) * (1 - a2)], 1))
    torch.testing.assert_close(net.calls[0], torch.ones_like(a1))
    torch.testing.assert_close(net.calls[1], 1 - a1)
    torch.testing.assert_close(masks.sum(1), torch.ones(2, 3, 3))


def test_recurrent_attention_keeps_tiny_masks_finite_in_log_space():
    net = FixedLogits([torch.full((1, 1, 2, 2), 60.0), torch.full((1, 1, 2, 2), 60.0)])
    log_masks = recurrent_attention(net, torch.rand(1, 3, 2, 2), num_slots=3)
    assert torch.isfinite(log_masks).all() and log_masks[0, 2].max() < -100  # e^-120, not log 0


def test_attention_unet_shapes_and_size_check():
    net = AttentionUNet(3, channels=(4, 8, 8), mlp_hidden=8, image_size=16)
    assert net(torch.rand(2, 3, 16, 16), torch.zeros(2, 1, 16, 16)).shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="divisible"):
        AttentionUNet(3, channels=(4, 8, 8), image_size=12)


def test_gaussian_pixel_log_likelihood_matches_torch_distributions():
    means, images = torch.rand(2, 4, 3, 5, 5), torch.rand(2, 1, 3, 5, 5)
    expected = Normal(means, 0.11).log_prob(images).sum(-3)
    torch.testing.assert_close(gaussian_pixel_log_likelihood(means, images, 0.11), expected)


def test_spatial_broadcast_decoder_sees_position_and_keeps_the_size():
    torch.manual_seed(0)
    decoder = SpatialBroadcastDecoder(latent_dim=3, out_channels=4, image_size=10, width=6, layers=3)
    out = decoder(torch.randn(2, 3))
    assert out.shape == (2, 4, 10, 10)
    # One latent for the whole image: only the coordinate channels make pixels differ.
    assert out[0, 0].std() > 1e-4
    assert decoder.grid[0, 0, 0] == -1 and decoder.grid[1, -1, -1] == 1


def test_monet_loss_is_the_mixture_nll_plus_weighted_kls():
    torch.manual_seed(0)
    model = MONet(**TINY)
    images = torch.rand(2, 3, 16, 16)
    torch.manual_seed(1)
    terms = model.loss_terms(images)
    torch.manual_seed(1)  # the same posterior sample
    log_masks = model.log_masks(images)
    out = model.vae(images, log_masks)
    scales = torch.tensor([0.09, 0.11, 0.11])[None, :, None, None, None]
    pixel = Normal(out["means"], scales).log_prob(images[:, None]).sum(2)  # [B, K, H, W]
    mixture = (log_masks.exp() * pixel.exp()).sum(1).log()
    torch.testing.assert_close(terms["nll"], -mixture.sum((1, 2)), rtol=1e-4, atol=1e-2)
    posterior = Normal(out["mean"], (0.5 * out["logvar"]).exp())
    torch.testing.assert_close(terms["kl"], kl_divergence(posterior, Normal(0.0, 1.0)).sum((1, 2)))
    q = Categorical(probs=log_masks.exp().permute(0, 2, 3, 1))
    p = Categorical(logits=out["mask_logits"].permute(0, 2, 3, 1))
    torch.testing.assert_close(terms["mask_kl"], kl_divergence(q, p).sum((1, 2)), rtol=1e-4, atol=1e-4)


def test_monet_training_lowers_its_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = MONet(**TINY, optimizer="adam", lr=3e-3)
    images = torch.rand(4, 3, 16, 16)
    optimizer = model.configure_optimizers()

    def loss():
        terms = model.loss_terms(images)
        return (terms["nll"] + 0.5 * terms["kl"] + 0.5 * terms["mask_kl"]).mean()

    before = loss().item()
    for _ in range(30):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert loss().item() < before - 100  # nats per 16x16 image


def test_decomposition_at_a_lower_working_resolution_comes_back_full_size():
    torch.manual_seed(0)
    model = MONet(**{**TINY, "image_size": 32}, resolution=16)
    images = torch.rand(2, 3, 32, 32)
    decomposition = model.checked_decompose(images)  # masks sum to 1 at 32x32
    assert decomposition.masks.shape == (2, 3, 32, 32)
    assert decomposition.background.tolist() == [True, False, False]
    torch.testing.assert_close(decomposition.recon,
                               (decomposition.masks[:, :, None] * decomposition.layers).sum(1))


def test_monet_segmentation_takes_its_masks_from_omega():
    torch.manual_seed(0)
    model = MONetSegmentation(image_size=16, num_slots=6, backbone="resnet8", width=4,
                              latent_dim=3, encoder_widths=(4, 4), encoder_hidden=8,
                              decoder_width=4, decoder_layers=2)
    images = torch.rand(2, 3, 16, 16)
    decomposition = model.checked_decompose(images)
    assert decomposition.masks.shape == (2, 6, 16, 16)
    torch.testing.assert_close(decomposition.masks, model.segmentation.masks(images))


def test_traversal_picture_has_a_row_per_dimension():
    torch.manual_seed(0)
    model = MONet(**TINY)
    picture = model.pictures({"image": torch.rand(2, 3, 16, 16)}, None)["traversal"]
    assert picture.shape == (3, 6 * 18 + 2, 7 * 18 + 2)  # 3 latents (all of them) x 2 rows, 7 values


def test_bf16_autocast_gives_finite_terms_close_to_fp32():
    """The bf16 path (``--trainer.precision=bf16-mixed``), checked on the CPU."""
    torch.manual_seed(0)
    model = MONet(**TINY)
    images = torch.rand(2, 3, 16, 16)
    torch.manual_seed(1)
    full = model.loss_terms(images)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = model.loss_terms(images)
    for name in full:
        assert torch.isfinite(half[name]).all(), name
        torch.testing.assert_close(half[name].float(), full[name], rtol=0.05, atol=2.0)
