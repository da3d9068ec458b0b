"""GAN building blocks shared by the adversarial methods (ReDO, PerturbGAN, CIS).

SAGAN-style pieces (Zhang et al. 2018): spectrally normalised convolutions and linears
(Miyato et al. 2018), self-attention with max-pooled keys and values, conditional
normalisation whose scale and shift are linear functions of a latent code (Dumoulin et al.
2017), and residual up/down blocks. Plus the hinge losses and the orthogonal initialisation
(Saxe et al. 2014) that go with them.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from objdecomp.nn.spectral_norm import spectral_norm


def sn_conv2d(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
              padding: Optional[int] = None, bias: bool = True) -> nn.Conv2d:
    """A spectrally normalised convolution ("same" padding unless given)."""
    padding = kernel_size // 2 if padding is None else padding
    return spectral_norm(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                   bias=bias))


def sn_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    """A spectrally normalised linear layer."""
    return spectral_norm(nn.Linear(in_features, out_features, bias=bias))


@torch.no_grad()
def orthogonal_init_(module: nn.Module, gain: float = 1.0,
                     spectral_normalised: bool = True) -> nn.Module:
    """Orthogonal initialisation of every convolution and linear weight in ``module``.

    Spectrally normalised layers are initialised through their unnormalised weight, and
    their power-iteration vectors are re-estimated for it (by re-registering the
    parametrisation), so the first forward pass already divides by the right sigma; with
    ``spectral_normalised=False`` they keep PyTorch's default initialisation. Biases keep
    PyTorch's default. Call before creating optimizers: re-registration replaces the
    parametrised weight's ``Parameter`` object.
    """
    for layer in module.modules():
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            continue
        if parametrize.is_parametrized(layer, "weight"):
            if not spectral_normalised:
                continue
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
            nn.init.orthogonal_(layer.weight, gain)
            spectral_norm(layer)
        else:
            nn.init.orthogonal_(layer.weight, gain)
    return module


class SelfAttention(nn.Module):
    """SAGAN self-attention: ``x + gamma * o(attention(x))`` with ``gamma`` initialised at 0.

    Queries and keys have ``C/8`` channels, values ``C/2``; keys and values are max-pooled
    by 2, dividing the cost of the ``HW x HW`` attention by 4 (SAGAN's released code, also
    ReDO's). SAGAN does not scale the logits by ``1/sqrt(d)``, hence ``scale=1``.
    """

    def __init__(self, channels: int):
        super().__init__()
        inner = max(channels // 8, 1)
        self.query = sn_conv2d(channels, inner, 1, bias=False)
        self.key = sn_conv2d(channels, inner, 1, bias=False)
        self.value = sn_conv2d(channels, channels // 2, 1, bias=False)
        self.out = sn_conv2d(channels // 2, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        # PyTorch's fused (flash) CPU kernel never materialises the HW x HW/4 attention
        # matrix (2.5x faster for 4096 x 1024 tokens) but needs a head dimension, a
        # contiguous last dimension and queries, keys and values of one width: zero channels
        # appended to queries and keys leave every dot product, hence the result, unchanged.
        query = _tokens(self.query(x))  # [B, 1, HW, C/8]
        key = _tokens(F.max_pool2d(self.key(x), 2))  # [B, 1, HW/4, C/8]
        value = _tokens(F.max_pool2d(self.value(x), 2))  # [B, 1, HW/4, C/2]
        padding = (0, max(value.shape[-1] - query.shape[-1], 0))
        attended = F.scaled_dot_product_attention(F.pad(query, padding), F.pad(key, padding),
                                                  value, scale=1.0)
        attended = attended[:, 0].transpose(1, 2).reshape(b, -1, h, w)
        return x + self.gamma * self.out(attended)


def _tokens(features: Tensor) -> Tensor:
    """``[B, C, H, W]`` -> one attention head of HW tokens ``[B, 1, HW, C]``, contiguous
    (a free view when the features are channels-last)."""
    return features.flatten(2).transpose(1, 2).contiguous()[:, None]


def instance_norm(x: Tensor, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                  eps: float = 1e-5) -> Tensor:
    """Instance normalisation of ``x`` ``[B, C, H, W]``, then ``* weight + bias`` (``[B or 1, C]``).

    The same function as ``F.instance_norm`` (biased variance, ``eps`` inside the square root),
    computed as one ``x * scale + shift`` pass in ``x``'s memory format: PyTorch's version views
    the batch as one image of ``B·C`` channels, which copies a channels-last input there and
    back, and the affine step of a conditional norm would be two more passes.
    """
    var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight[:, :, None, None]
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias[:, :, None, None]
    return torch.addcmul(shift, x, scale)


class InstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` (same parameters and state) without its channels-last copies
    (:func:`instance_norm`); no running statistics."""

    def forward(self, x: Tensor) -> Tensor:
        if self.track_running_stats:
            raise NotImplementedError("running statistics are not supported")
        weight = self.weight[None] if self.affine else None
        bias = self.bias[None] if self.affine else None
        return instance_norm(x, weight, bias, self.eps)


class ConditionalNorm2d(nn.Module):
    """Normalisation without affine parameters, then ``gamma(z) * x_hat + beta(z)``.

    Args:
        channels: feature channels.
        cond_dim: size of the conditioning code ``z``.
        kind: ``"batch"`` (conditional batch norm, as the ReDO paper says, §4) or
            ``"instance"`` (conditional instance norm, as the ReDO code does).
    """

    def __init__(self, channels: int, cond_dim: int, kind: str = "batch"):
        super().__init__()
        if kind not in ("batch", "instance"):
            raise ValueError(f"unknown conditional norm '{kind}' (batch or instance)")
        self.kind = kind
        if kind == "batch":
            self.norm = nn.BatchNorm2d(channels, affine=False)
        # Plain linears, as the 1x1 convolutions of z in the ReDO code (no spectral norm).
        self.gamma = nn.Linear(cond_dim, channels)
        self.beta = nn.Linear(cond_dim, channels)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        gamma, beta = self.gamma(z), self.beta(z)
        if self.kind == "instance":
            return instance_norm(x, gamma, beta)
        return torch.addcmul(beta[:, :, None, None], self.norm(x), gamma[:, :, None, None])


def same_layout(side: Tensor, like: Tensor) -> Tensor:
    """``side`` in ``like``'s memory format, so that concatenating them keeps it: a one-channel
    map is both contiguous and channels-last, and ``torch.cat`` then falls back to contiguous,
    which every following channels-last convolution would copy back."""
    if like.is_contiguous() or not like.is_contiguous(memory_format=torch.channels_last):
        return side
    laid_out = torch.empty_like(side, memory_format=torch.channels_last)
    return laid_out.copy_(side)


class UpBlock(nn.Module):
    """Residual up-sampling block of a conditional generator (SAGAN / ReDO G_k).

    ``h = conv3(relu(cn(up(conv3([relu(cn(x, z)), side])), z)))``, shortcut
    ``conv1(up(x))``; ``side`` (e.g. ReDO's mask, pooled to the block's input size) is
    concatenated before the first convolution. Up-sampling is nearest-neighbour ×2.
    """

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int,
                 side_channels: int = 0, norm: str = "batch"):
        super().__init__()
        self.norm1 = ConditionalNorm2d(in_channels, cond_dim, norm)
        self.conv1 = sn_conv2d(in_channels + side_channels, out_channels, 3, bias=False)
        self.norm2 = ConditionalNorm2d(out_channels, cond_dim, norm)
        self.conv2 = sn_conv2d(out_channels, out_channels, 3)
        self.shortcut = sn_conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, z: Tensor, side: Optional[Tensor] = None) -> Tensor:
        h = F.relu(self.norm1(x, z), inplace=True)
        if side is not None:
            h = torch.cat([h, same_layout(side, h)], dim=1)
        h = self.conv1(F.interpolate(h, scale_factor=2, mode="nearest"))
        h = self.conv2(F.relu(self.norm2(h, z), inplace=True))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class DownBlock(nn.Module):
    """Residual down-sampling block of a discriminator / encoder (SAGAN).

    ``h = pool(conv3(relu(conv3(relu(x)))))`` with shortcut ``conv1(pool(x))``; the first
    block of a network omits the leading ReLU (its input is the image), and the last one
    may skip pooling (identity shortcut when channels match). Pooling is 2×2 averaging.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool = True,
                 first: bool = False):
        super().__init__()
        self.downsample, self.first = downsample, first
        self.conv1 = sn_conv2d(in_channels, out_channels, 3)
        self.conv2 = sn_conv2d(out_channels, out_channels, 3)
        needs_projection = downsample or in_channels != out_channels
        self.shortcut = sn_conv2d(in_channels, out_channels, 1) if needs_projection else None

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        skip = x
        if self.downsample:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        if self.shortcut is not None:
            skip = self.shortcut(skip)
        return h + skip


def hinge_d_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Discriminator hinge loss ``E[relu(1 - D(real))] + E[relu(1 + D(fake))]`` (Lim & Ye 2017)."""
    return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()


def hinge_g_loss(fake_scores: Tensor) -> Tensor:
    """Generator hinge loss ``-E[D(fake)]``."""
    return -fake_scores.mean()
