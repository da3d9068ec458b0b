"""GAN building blocks (objdecomp/nn/gan.py) against hand-computed cases."""

import pytest
import torch
import torch.nn.functional as F

from objdecomp.nn.gan import (ConditionalNorm2d, DownBlock, SelfAttention, UpBlock, hinge_d_loss,
                              hinge_g_loss, orthogonal_init_, sn_conv2d, sn_linear)


def _sigma(weight: torch.Tensor) -> float:
    return torch.linalg.matrix_norm(weight.flatten(1), ord=2).item()


def test_spectral_norm_divides_by_largest_singular_value():
    torch.manual_seed(0)
    conv = sn_conv2d(8, 16, 3)
    for _ in range(30):  # one power iteration per training forward
        conv(torch.randn(2, 8, 5, 5))
    assert _sigma(conv.weight) == pytest.approx(1.0, abs=1e-3)
    original = conv.parametrizations.weight.original
    assert abs(_sigma(original) - 1.0) > 0.1  # the raw weight is not normalised
    with torch.no_grad():
        original.mul_(5.0)  # scaling the raw weight leaves the normalised one unchanged
    assert _sigma(conv.weight) == pytest.approx(1.0, abs=1e-3)
    linear = sn_linear(10, 4)
    for _ in range(30):
        linear(torch.randn(3, 10))
    assert _sigma(linear.weight) == pytest.approx(1.0, abs=1e-3)


def test_orthogonal_init_reaches_spectral_norm_layers_and_refreshes_sigma():
    torch.manual_seed(0)
    net = torch.nn.Sequential(sn_conv2d(4, 6, 3), torch.nn.Conv2d(6, 6, 1), sn_linear(5, 3))
    orthogonal_init_(net, gain=0.8)
    raw = net[0].parametrizations.weight.original.flatten(1)  # [6, 36]: orthonormal rows
    assert torch.allclose(raw @ raw.T, 0.64 * torch.eye(6), atol=1e-5)
    plain = net[1].weight.flatten(1)
    assert torch.allclose(plain @ plain.T, 0.64 * torch.eye(6), atol=1e-5)
    # The power-iteration vectors were re-estimated: sigma is right at the first use.
    with torch.no_grad():
        net[0].eval()
        assert _sigma(net[0].weight) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("kind", ["batch", "instance"])
def test_conditional_norm_normalises_then_applies_gamma_and_beta_of_z(kind):
    torch.manual_seed(0)
    norm = ConditionalNorm2d(4, cond_dim=3, kind=kind)
    x, z = torch.randn(5, 4, 6, 6) * 3 + 2, torch.randn(5, 3)
    dims = (0, 2, 3) if kind == "batch" else (2, 3)
    mean, var = x.mean(dims, keepdim=True), x.var(dims, unbiased=False, keepdim=True)
    x_hat = (x - mean) / torch.sqrt(var + 1e-5)
    expected = x_hat * norm.gamma(z)[:, :, None, None] + norm.beta(z)[:, :, None, None]
    assert torch.allclose(norm(x, z), expected, atol=1e-4)
    # Different codes give different outputs for the same features (the code controls style).
    assert not torch.allclose(norm(x, z), norm(x, torch.randn(5, 3)), atol=1e-2)


def test_conditional_norm_rejects_unknown_kind():
    with pytest.raises(ValueError, match="batch or instance"):
        ConditionalNorm2d(4, 3, kind="layer")


def test_self_attention_starts_as_identity_and_matches_naive_attention():
    torch.manual_seed(0)
    attention = SelfAttention(16).eval()
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(attention(x), x)  # gamma = 0 at init (SAGAN)
    with torch.no_grad():
        attention.gamma.fill_(0.7)
        q = attention.query(x).flatten(2)  # [B, 2, 64]
        k = F.max_pool2d(attention.key(x), 2).flatten(2)  # [B, 2, 16]
        v = F.max_pool2d(attention.value(x), 2).flatten(2)  # [B, 8, 16]
        weights = torch.softmax(k.transpose(1, 2) @ q, dim=1)  # over keys, unscaled (ReDO code)
        naive = x + 0.7 * attention.out((v @ weights).view(2, 8, 8, 8))
        assert torch.allclose(attention(x), naive, atol=1e-5)


def test_self_attention_runs_on_the_fused_flash_kernel_forward_and_backward():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    attention = SelfAttention(16)
    with torch.no_grad():
        attention.gamma.fill_(0.5)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    reference = attention(x)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # raises if the kernel cannot be used
        fused = attention(x)
        fused.sum().backward()
    assert torch.allclose(fused, reference, atol=1e-5)
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_residual_blocks_change_resolution_and_use_the_side_input():
    torch.manual_seed(0)
    up = UpBlock(8, 4, cond_dim=3, side_channels=1)
    x, z = torch.randn(2, 8, 4, 4), torch.randn(2, 3)
    side = torch.zeros(2, 1, 4, 4)
    out = up(x, z, side)
    assert out.shape == (2, 4, 8, 8)
    assert not torch.allclose(out, up(x, z, side + 1))
    down = DownBlock(4, 8, first=True)
    assert down(out).shape == (2, 8, 4, 4)
    last = DownBlock(8, 8, downsample=False)
    assert last.shortcut is None and last(torch.randn(2, 8, 4, 4)).shape == (2, 8, 4, 4)


def test_hinge_losses_on_hand_computed_scores():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    # relu(1 - real) = [0, 0.5] -> 0.25; relu(1 + fake) = [0, 1.5] -> 0.75.
    assert hinge_d_loss(real, fake).item() == pytest.approx(1.0)
    assert hinge_g_loss(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)
    # Confident correct scores cost nothing.
    assert hinge_d_loss(torch.tensor([1.5]), torch.tensor([-1.5])).item() == 0.0


# --- speed-minded versions of PyTorch's pieces: the same functions --------------------------------
def _reference_spectral_norm(weight: torch.Tensor, u0: torch.Tensor):
    """One power iteration from u0 (v, then u), σ = uᵀWv, W/σ: Miyato et al.'s Algorithm 1, as
    the original torch.nn.utils.spectral_norm computes it."""
    matrix = weight.flatten(1)
    with torch.no_grad():
        v = F.normalize(matrix.t() @ u0, dim=0)
        u = F.normalize(matrix @ v, dim=0)
    return weight / torch.dot(u, matrix @ v), u, v


@pytest.mark.parametrize("layout", ["channels_last", "contiguous", "linear"])
def test_spectral_norm_matches_the_reference_in_value_gradient_and_state(layout):
    torch.manual_seed(0)
    layer = sn_linear(7, 4) if layout == "linear" else sn_conv2d(6, 5, 3)
    if layout == "channels_last":
        layer.to(memory_format=torch.channels_last)
    original = layer.parametrizations.weight.original
    state = layer.parametrizations.weight[0]
    u0 = state._u.clone()
    reference_weight = original.detach().clone().requires_grad_()
    reference, u, v = _reference_spectral_norm(reference_weight, u0)
    upstream = torch.randn_like(reference)
    (reference * upstream).sum().backward()
    normalised = layer.weight  # each access in training mode is one power iteration
    (normalised * upstream).sum().backward()
    assert torch.allclose(normalised, reference, atol=1e-6)
    assert torch.allclose(original.grad, reference_weight.grad, atol=1e-5)
    assert torch.allclose(state._u, u, atol=1e-6) and torch.allclose(state._v, v, atol=1e-6)
    if layout == "channels_last":  # computed in place: the gradient keeps the weight's layout
        assert original.grad.is_contiguous(memory_format=torch.channels_last)
    layer.eval()  # no power iteration: σ from the stored vectors
    assert torch.allclose(layer.weight, original / torch.dot(u, original.flatten(1) @ v), atol=1e-6)


def test_spectral_norm_state_has_pytorchs_keys():
    from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

    ours = sn_conv2d(4, 6, 3).state_dict()
    theirs = torch_spectral_norm(torch.nn.Conv2d(4, 6, 3, padding=1)).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
def test_instance_norm_is_pytorchs_in_both_memory_formats(memory_format):
    from objdecomp.nn.gan import InstanceNorm2d, instance_norm

    torch.manual_seed(0)
    x = (torch.randn(3, 4, 6, 5) * 3 + 2).contiguous(memory_format=memory_format).requires_grad_()
    ours, theirs = InstanceNorm2d(4, affine=True), torch.nn.InstanceNorm2d(4, affine=True)
    with torch.no_grad():
        for norm in (ours, theirs):
            norm.weight.copy_(torch.linspace(0.5, 2, 4))
            norm.bias.copy_(torch.linspace(-1, 1, 4))
    upstream = torch.randn(3, 4, 6, 5)
    outputs = [ours(x), theirs(x)]
    gradients = [torch.autograd.grad((out * upstream).sum(), [x, norm.weight, norm.bias])
                 for out, norm in zip(outputs, (ours, theirs))]
    assert outputs[0].is_contiguous(memory_format=memory_format)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(*gradients))
    plain = instance_norm(x)  # no affine step
    assert torch.allclose(plain, F.instance_norm(x), atol=1e-5)


def test_a_one_channel_side_input_keeps_the_concatenation_channels_last():
    from objdecomp.nn.gan import same_layout

    features = torch.randn(2, 8, 4, 4).contiguous(memory_format=torch.channels_last)
    side = torch.rand(2, 1, 4, 4)
    assert not torch.cat([features, side], 1).is_contiguous(memory_format=torch.channels_last)
    joined = torch.cat([features, same_layout(side, features)], 1)
    assert joined.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(joined, torch.cat([features, side], 1))
    assert same_layout(side, features.contiguous()) is side
