"""StyleGAN building blocks (Karras et al. 2019, on the progressive GAN of Karras et al. 2018).

- Equalised learning rate: weights drawn N(0, 1) and scaled at run time by ``gain / sqrt(fan_in)``,
  so Adam's per-parameter step moves every layer at the same relative speed.
- The mapping network (pixel norm, then ``depth`` equalised linear layers with leaky ReLU, at
  ``lr_scale`` of the learning rate), noise injection (per-channel weight, zero at first), AdaIN
  (instance norm, then a per-channel scale and shift from a style vector, scale bias 1), a
  [1, 2, 1]² blur after each up-sampling, and a learned 4×4 constant input.
- :class:`StyleSynthesis`: the progressive synthesis network, one block per resolution with two
  AdaIN inputs each, and a 1×1 output head per resolution; fade-in mixes the up-sampled previous
  head with the new one, ``(1 − α) up(head_{i−1}) + α head_i``.
- :class:`ProgressiveDiscriminator`: from-RGB 1×1 per resolution, blocks of conv, blur and
  down-sampling, minibatch standard deviation and the 4×4 head, with the mirrored fade-in.
- :func:`gradient_penalty`: WGAN-GP (Gulrajani et al. 2017) at random interpolates.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LRELU = 0.2


def stylegan_channels(resolution: int, base: int = 16384, maximum: int = 512) -> int:
    """Feature channels at ``resolution``: ``min(maximum, base / resolution)`` (512 up to 32 px,
    256 at 64, 128 at 128 with StyleGAN's values)."""
    return max(1, min(maximum, base // resolution))


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate (weights ~ N(0, 1/lr_scale), scaled at run time)."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0,
                 gain: float = math.sqrt(2), lr_scale: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_scale)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.scale = gain / math.sqrt(in_features) * lr_scale
        self.lr_scale = lr_scale

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_scale)


class EqualConv2d(nn.Module):
    """Conv layer with equalised learning rate; ``stride`` 2 down-samples."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 gain: float = math.sqrt(2)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel_size ** 2)
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


def pixel_norm(x: Tensor, eps: float = 1e-8) -> Tensor:
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


class MappingNetwork(nn.Module):
    """z -> w: pixel norm, then ``depth`` equalised linear layers + leaky ReLU (StyleGAN §2).

    ``w_avg`` follows the mean w (StyleGAN's ``dlatent_avg``, decay 0.995) so an encoder may
    predict offsets from it.
    """

    def __init__(self, dim: int, depth: int = 8, lr_scale: float = 0.01):
        super().__init__()
        self.layers = nn.ModuleList([EqualLinear(dim, dim, lr_scale=lr_scale) for _ in range(depth)])
        self.register_buffer("w_avg", torch.zeros(dim))

    def forward(self, z: Tensor) -> Tensor:
        x = pixel_norm(z)
        for layer in self.layers:
            x = F.leaky_relu(layer(x), LRELU)
        if self.training:
            with torch.no_grad():
                self.w_avg.lerp_(x.detach().mean(0).to(self.w_avg.dtype), 0.005)
        return x


class NoiseInjection(nn.Module):
    """Adds per-pixel noise N(0, 1) times a per-channel weight (zero at first)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        return x + self.weight * noise


class AdaIN(nn.Module):
    """Instance norm, then ``γ(w) x + β(w)`` from an equalised linear layer (γ's bias 1)."""

    def __init__(self, channels: int, style_dim: int):
        super().__init__()
        self.style = EqualLinear(style_dim, 2 * channels, gain=1.0)
        with torch.no_grad():
            self.style.bias[:channels] = 1.0

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        gamma, beta = self.style(w)[:, :, None, None].chunk(2, dim=1)
        return gamma * F.instance_norm(x, eps=1e-8) + beta


def blur(x: Tensor) -> Tensor:
    """Depthwise [1, 2, 1]² / 16 filter (StyleGAN's anti-aliasing around resampling)."""
    kernel = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype)
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(x, kernel, padding=1, groups=x.shape[1])


class StyleBlock(nn.Module):
    """One synthesis resolution: (up-sample, conv, blur | the constant), noise, lrelu, AdaIN,
    conv, noise, lrelu, AdaIN. Two style inputs."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, first: bool = False):
        super().__init__()
        self.first = first
        if first:
            self.constant = nn.Parameter(torch.ones(1, out_channels, 4, 4))
        else:
            self.conv0 = EqualConv2d(in_channels, out_channels, 3, padding=1)
        self.noise0, self.adain0 = NoiseInjection(out_channels), AdaIN(out_channels, style_dim)
        self.conv1 = EqualConv2d(out_channels, out_channels, 3, padding=1)
        self.noise1, self.adain1 = NoiseInjection(out_channels), AdaIN(out_channels, style_dim)

    def forward(self, x: Optional[Tensor], w0: Tensor, w1: Tensor) -> Tensor:
        if self.first:
            x = self.constant.expand(w0.shape[0], -1, -1, -1)
        else:
            x = blur(self.conv0(F.interpolate(x, scale_factor=2, mode="nearest")))
        x = self.adain0(F.leaky_relu(self.noise0(x), LRELU), w0)
        x = self.adain1(F.leaky_relu(self.noise1(self.conv1(x)), LRELU), w1)
        return x


def resolutions_up_to(resolution: int) -> List[int]:
    """4, 8, ..., ``resolution`` (a power of two >= 4)."""
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"StyleGAN resolutions are powers of two >= 4, got {resolution}")
    return [4 * 2 ** i for i in range(int(math.log2(resolution)) - 1)]


class StyleSynthesis(nn.Module):
    """The progressive synthesis network up to ``resolution`` with ``out_channels`` outputs.

    ``forward(styles, resolution, alpha)`` takes per-layer styles ``[B, L, style_dim]`` (two per
    block, :attr:`num_styles` in all; only the first ``2 × blocks`` up to ``resolution`` are read)
    and returns ``[B, out_channels, resolution, resolution]`` (linear heads, no tanh).
    """

    def __init__(self, resolution: int, style_dim: int, out_channels: int,
                 channel_base: int = 16384, channel_max: int = 512, first_output: int = 4):
        super().__init__()
        self.resolutions = resolutions_up_to(resolution)
        channels = [stylegan_channels(r, channel_base, channel_max) for r in self.resolutions]
        self.blocks = nn.ModuleList(
            StyleBlock(channels[max(i - 1, 0)], c, style_dim, first=i == 0)
            for i, c in enumerate(channels))
        # output heads only where training outputs images (from the growing's first resolution)
        self.heads = nn.ModuleDict({str(r): EqualConv2d(c, out_channels, 1, gain=1.0)
                                    for r, c in zip(self.resolutions, channels) if r >= first_output})
        self.num_styles = 2 * len(self.blocks)

    def forward(self, styles: Tensor, resolution: Optional[int] = None, alpha: float = 1.0) -> Tensor:
        last = self.resolutions.index(resolution or self.resolutions[-1])
        x, previous = None, None
        for i in range(last + 1):
            previous = x
            x = self.blocks[i](x, styles[:, 2 * i], styles[:, 2 * i + 1])
        out = self.heads[str(self.resolutions[last])](x)
        if alpha < 1 and last > 0 and str(self.resolutions[last - 1]) in self.heads:
            # fade-in of the newest block (progressive GAN §3)
            low = self.heads[str(self.resolutions[last - 1])](previous)
            low = F.interpolate(low, scale_factor=2, mode="nearest")
            out = torch.lerp(low, out, alpha)
        return out


class StyleGenerator(nn.Module):
    """Mapping network + synthesis; style mixing draws a second code for the layers after a
    random crossover point with probability ``mixing``."""

    def __init__(self, resolution: int, latent_dim: int, out_channels: int, mapping_depth: int = 8,
                 mapping_lr_scale: float = 0.01, channel_base: int = 16384, channel_max: int = 512,
                 first_output: int = 4):
        super().__init__()
        self.mapping = MappingNetwork(latent_dim, mapping_depth, mapping_lr_scale)
        self.synthesis = StyleSynthesis(resolution, latent_dim, out_channels, channel_base,
                                        channel_max, first_output)

    def styles(self, z: Tensor, z_mix: Optional[Tensor] = None, mixing: float = 0.0,
               resolution: Optional[int] = None) -> Tensor:
        """Per-layer styles ``[B, L, D]`` for codes ``z`` (and a second code for mixing)."""
        w = self.mapping(z)
        count = self.synthesis.num_styles
        styles = w[:, None].expand(-1, count, -1)
        if z_mix is not None and mixing > 0 and float(torch.rand(())) < mixing:
            used = 2 * (self.synthesis.resolutions.index(resolution or self.synthesis.resolutions[-1]) + 1)
            crossover = int(torch.randint(1, max(used, 2), ()))
            w_mix = self.mapping(z_mix)[:, None].expand(-1, count, -1)
            layer = torch.arange(count, device=z.device)[None, :, None]
            styles = torch.where(layer < crossover, styles, w_mix)
        return styles

    def forward(self, z: Tensor, z_mix: Optional[Tensor] = None, mixing: float = 0.0,
                resolution: Optional[int] = None, alpha: float = 1.0) -> Tensor:
        return self.synthesis(self.styles(z, z_mix, mixing, resolution), resolution, alpha)


def minibatch_stddev(x: Tensor, group: int = 4) -> Tensor:
    """Appends one channel: the standard deviation over groups of ``group`` images, averaged
    over features and pixels (progressive GAN §3)."""
    b, c, h, w = x.shape
    g = min(group, b)
    while b % g:
        g -= 1
    y = x.reshape(g, b // g, c, h, w)
    std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # [b // g]
    std = std.repeat(g)[:, None, None, None].expand(b, 1, h, w)
    return torch.cat([x, std], dim=1)


class DiscriminatorBlock(nn.Module):
    """conv 3×3, lrelu, blur, conv 3×3, 2×2 average-pool down-sampling, lrelu."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, padding=1)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = blur(F.leaky_relu(self.conv0(x), LRELU))
        return F.leaky_relu(F.avg_pool2d(self.conv1(x), 2), LRELU)


class ProgressiveDiscriminator(nn.Module):
    """The mirrored progressive discriminator: ``forward(images, resolution, alpha)`` -> ``[B]``.

    :meth:`features` returns the activations entering the 8×8 → 4×4 block (the paper's
    "512 × 8 × 8" features for the perceptual loss of Eq. 7).
    """

    def __init__(self, resolution: int, in_channels: int = 3, channel_base: int = 16384,
                 channel_max: int = 512, stddev_group: int = 4, first_input: int = 4):
        super().__init__()
        self.resolutions = resolutions_up_to(resolution)
        channels = [stylegan_channels(r, channel_base, channel_max) for r in self.resolutions]
        self.from_rgb = nn.ModuleDict({str(r): EqualConv2d(in_channels, c, 1)
                                       for r, c in zip(self.resolutions, channels) if r >= first_input})
        # blocks[i] takes resolution i to resolution i - 1 (none at 4×4: the head)
        self.blocks = nn.ModuleList(DiscriminatorBlock(channels[i], channels[i - 1])
                                    for i in range(1, len(channels)))
        c4 = channels[0]
        self.head_conv = EqualConv2d(c4 + 1, c4, 3, padding=1)
        self.head_dense = EqualLinear(c4 * 16, c4)
        self.head_out = EqualLinear(c4, 1, gain=1.0)
        self.stddev_group = stddev_group

    def _to_level(self, images: Tensor, resolution: Optional[int], alpha: float,
                  stop: int) -> Tuple[Tensor, int]:
        """Features at level ``stop`` (index into resolutions), from ``images``."""
        top = self.resolutions.index(resolution or images.shape[-1])
        x = F.leaky_relu(self.from_rgb[str(self.resolutions[top])](images), LRELU)
        for level in range(top, stop, -1):
            x = self.blocks[level - 1](x)
            if level == top and alpha < 1 and str(self.resolutions[top - 1]) in self.from_rgb:
                # fade-in: the skipped path through the lower from-RGB
                low = self.from_rgb[str(self.resolutions[top - 1])](F.avg_pool2d(images, 2))
                low = F.leaky_relu(low, LRELU)
                x = torch.lerp(low, x, alpha)
        return x, top

    def forward(self, images: Tensor, resolution: Optional[int] = None, alpha: float = 1.0) -> Tensor:
        x, _ = self._to_level(images, resolution, alpha, 0)
        x = minibatch_stddev(x, self.stddev_group)
        x = F.leaky_relu(self.head_conv(x), LRELU)
        x = F.leaky_relu(self.head_dense(x.flatten(1)), LRELU)
        return self.head_out(x).squeeze(1)

    def features(self, images: Tensor, resolution: Optional[int] = None) -> Tensor:
        """Activations at 8×8 (at full strength, α = 1), ``[B, C_8, 8, 8]``."""
        x, _ = self._to_level(images, resolution, 1.0, 1)
        return x


def gradient_penalty(critic, real: Tensor, fake: Tensor) -> Tensor:
    """``E[(||∇ D(x̃)||₂ − 1)²]`` at ``x̃ = ζ x + (1 − ζ) x̂``, ζ ~ U[0, 1] per image (Eq. 6);
    ``critic`` maps images to ``[B]`` scores. Differentiable (``create_graph``) for D's step."""
    zeta = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = (zeta * real.detach() + (1 - zeta) * fake.detach()).requires_grad_(True)
    grad, = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def wgan_gp_discriminator_loss(real_scores: Tensor, fake_scores: Tensor, penalty: Tensor,
                               gp_weight: float = 10.0, drift: float = 0.001) -> Tensor:
    """Eq. 6: ``E[D(x̂)] − E[D(x)] + λ GP + ε E[D(x)²]``."""
    return (fake_scores.mean() - real_scores.mean() + gp_weight * penalty
            + drift * real_scores.pow(2).mean())
