"""StyleGAN blocks (objdecomp/nn/stylegan.py) on hand-built cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from objdecomp.nn.stylegan import (AdaIN, EqualConv2d, EqualLinear, MappingNetwork,
                                   NoiseInjection, ProgressiveDiscriminator, StyleSynthesis, blur,
                                   gradient_penalty, minibatch_stddev, resolutions_up_to,
                                   stylegan_channels, wgan_gp_discriminator_loss)


def test_equalised_linear_scales_weights_by_he_constant_at_run_time():
    torch.manual_seed(0)
    layer = EqualLinear(16, 4)
    x = torch.randn(3, 16)
    expected = x @ (layer.weight * math.sqrt(2) / math.sqrt(16)).T + layer.bias
    assert torch.allclose(layer(x), expected, atol=1e-6)
    # stored weights are N(0, 1): the scale lives in the forward pass, not in the init
    assert abs(float(layer.weight.detach().std()) - 1) < 0.35


def test_equalised_lr_multiplier_keeps_the_function_and_shrinks_adam_steps():
    torch.manual_seed(0)
    fast, slow = EqualLinear(8, 8), EqualLinear(8, 8, lr_scale=0.01)
    with torch.no_grad():
        slow.weight.copy_(fast.weight / 0.01)
        slow.bias.copy_(fast.bias / 0.01)
    x = torch.randn(5, 8)
    assert torch.allclose(fast(x), slow(x), atol=1e-5)
    before = [layer(x).detach() for layer in (fast, slow)]
    for layer in (fast, slow):
        optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2)
        layer(x).sum().backward()
        optimizer.step()
    moved = [float((layer(x) - b).abs().mean()) for layer, b in zip((fast, slow), before)]
    assert moved[1] == pytest.approx(moved[0] * 0.01, rel=0.05)


def test_equalised_conv_scale():
    torch.manual_seed(0)
    conv = EqualConv2d(3, 5, 3, padding=1)
    x = torch.randn(2, 3, 6, 6)
    expected = F.conv2d(x, conv.weight * math.sqrt(2) / math.sqrt(27), conv.bias, padding=1)
    assert torch.allclose(conv(x), expected, atol=1e-6)


def test_mapping_network_normalises_z_and_tracks_the_mean_w():
    torch.manual_seed(0)
    mapping = MappingNetwork(8, depth=2)
    z = torch.randn(4, 8)
    assert torch.allclose(mapping(z), mapping(z * 5))  # pixel norm first
    assert mapping.w_avg.abs().sum() > 0
    mapping.eval()
    frozen = mapping.w_avg.clone()
    mapping(z)
    assert torch.equal(mapping.w_avg, frozen)


def test_noise_injection_starts_as_identity_and_adain_sets_statistics():
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(NoiseInjection(3)(x), x)
    adain = AdaIN(3, 5)
    with torch.no_grad():
        adain.style.weight.zero_()
        adain.style.bias.copy_(torch.tensor([2.0, 2.0, 2.0, 1.0, -1.0, 0.5]))
    y = adain(x, torch.randn(2, 5))
    assert torch.allclose(y.mean(dim=(2, 3)), torch.tensor([[1.0, -1.0, 0.5]] * 2), atol=1e-5)
    assert torch.allclose(y.std(dim=(2, 3), unbiased=False), torch.full((2, 3), 2.0), atol=1e-3)


def test_blur_keeps_constants_and_smooths_an_impulse():
    assert torch.allclose(blur(torch.ones(1, 2, 5, 5))[..., 1:-1, 1:-1], torch.ones(1, 2, 3, 3))
    impulse = torch.zeros(1, 1, 5, 5)
    impulse[0, 0, 2, 2] = 16
    out = blur(impulse)[0, 0, 1:4, 1:4]
    assert torch.equal(out, torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]))


def test_channels_and_resolutions():
    assert [stylegan_channels(r) for r in (4, 32, 64, 128)] == [512, 512, 256, 128]
    assert resolutions_up_to(32) == [4, 8, 16, 32]
    with pytest.raises(ValueError):
        resolutions_up_to(24)


def _synthesis():
    torch.manual_seed(0)
    net = StyleSynthesis(16, style_dim=8, out_channels=3, channel_base=64, channel_max=8)
    with torch.no_grad():  # visible noise and heads, so paths differ
        for block in net.blocks:
            block.noise0.weight.fill_(0.0)
            block.noise1.weight.fill_(0.0)
    return net


def test_synthesis_fade_in_at_alpha_0_is_the_upsampled_lower_head_and_at_1_the_new_head():
    net = _synthesis()
    styles = torch.randn(2, net.num_styles, 8)
    low = net(styles, resolution=8)
    faded0 = net(styles, resolution=16, alpha=0.0)
    assert faded0.shape == (2, 3, 16, 16)
    assert torch.allclose(faded0, F.interpolate(low, scale_factor=2, mode="nearest"), atol=1e-6)
    assert torch.allclose(net(styles, resolution=16, alpha=1.0), net(styles, resolution=16), atol=1e-6)
    half = net(styles, resolution=16, alpha=0.5)
    assert torch.allclose(half, (faded0 + net(styles, resolution=16)) / 2, atol=1e-5)


def test_discriminator_fade_in_at_alpha_0_is_the_lower_resolution_path():
    torch.manual_seed(0)
    disc = ProgressiveDiscriminator(16, channel_base=64, channel_max=8)
    images = torch.randn(4, 3, 16, 16)
    at0 = disc(images, resolution=16, alpha=0.0)
    assert torch.allclose(at0, disc(F.avg_pool2d(images, 2), resolution=8), atol=1e-5)
    assert torch.allclose(disc(images, 16, 1.0), disc(images), atol=1e-6)
    assert disc.features(images).shape == (4, 8, 8, 8)


def test_minibatch_stddev_channel():
    x = torch.zeros(4, 2, 3, 3)
    x[1] = 2.0  # one group of four: per-feature std over the group = sqrt(0.75)
    out = minibatch_stddev(x, group=4)
    assert out.shape == (4, 3, 3, 3)
    assert torch.allclose(out[:, 2], torch.full((4, 3, 3), math.sqrt(0.75)), atol=1e-4)


def test_gradient_penalty_of_a_linear_critic():
    """D(x) = <w, x>: the gradient is w everywhere, so GP = (|w| − 1)² at any interpolate."""
    w = torch.full((1, 2, 2, 2), 0.5)  # |w| = sqrt(8) / 2
    critic = lambda x: (x * w).flatten(1).sum(1)  # noqa: E731
    penalty = gradient_penalty(critic, torch.randn(3, 1, 2, 2).expand(-1, 2, -1, -1),
                               torch.randn(3, 2, 2, 2))
    assert penalty.item() == pytest.approx((math.sqrt(8) / 2 - 1) ** 2, rel=1e-5)
    loss = wgan_gp_discriminator_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.5]), penalty,
                                      gp_weight=10, drift=0.001)
    assert loss.item() == pytest.approx(0.5 - 2.0 + 10 * penalty.item() + 0.001 * 5.0, rel=1e-6)


def test_gradient_penalty_is_differentiable_for_the_critic():
    torch.manual_seed(0)
    layer = EqualLinear(4, 1)
    penalty = gradient_penalty(lambda x: layer(x.flatten(1)).squeeze(1) ** 2,
                               torch.randn(2, 1, 2, 2), torch.randn(2, 1, 2, 2))
    penalty.backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
