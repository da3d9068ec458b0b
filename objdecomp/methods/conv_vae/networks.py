"""The fully convolutional encoder and decoder of LAVAE's β-VAE baseline (appendix B).

Encoder: a stride-2 convolution, then 4 residual blocks of 2 convolutions each, with a stride-2
convolution after the first and after the second block ("between the first two pairs of
blocks"), giving ``width × H/8 × W/8`` (64 × 8 × 8 for 64×64 images); a last convolution
outputs the means and log-variances of the ``latent_channels × H/8 × W/8`` latent tensor
(16 × 8 × 8 = d_VAE = 1024).
Decoder: the mirror image, with transposed convolutions for the two inner upsamplings and
bilinear interpolation plus an ordinary convolution for the last one; it returns the logits of
the pixel-wise Bernoulli means (the paper's final sigmoid is applied by the likelihood).
Every convolution is followed by Leaky ReLU then batch normalisation, except the resampling
convolutions between two residual blocks and the output convolutions (appendix B).

Where the paper is silent (docs/methods/conv_vae.md): kernel sizes (3×3; 4×4 for stride 2),
the width of every layer (64, the size the paper gives after the encoder) and the Leaky ReLU
slope (0.01).
"""

from __future__ import annotations

from typing import Tuple

import torch.nn.functional as F
from torch import Tensor, nn

LEAKY_SLOPE = 0.01  # PyTorch's default; the paper does not give one


def conv_act_norm(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Convolution, Leaky ReLU, batch normalisation: the order appendix B states."""
    padding = (kernel - stride) // 2 if stride > 1 else kernel // 2
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, padding),
                         nn.LeakyReLU(LEAKY_SLOPE), nn.BatchNorm2d(out_channels))


class ResidualBlock(nn.Module):
    """Two 3×3 convolutions (each followed by Leaky ReLU and batch norm) plus the identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_act_norm(channels, channels), conv_act_norm(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Encoder(nn.Module):
    """Image ``[B, C, H, W]`` -> posterior means and log-variances ``[B, latent, H/8, W/8]``."""

    def __init__(self, channels: int, width: int = 64, latent_channels: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            conv_act_norm(channels, width, kernel=4, stride=2),
            ResidualBlock(width),
            nn.Conv2d(width, width, 4, 2, 1),  # between two blocks: no activation, no norm
            ResidualBlock(width),
            nn.Conv2d(width, width, 4, 2, 1),
            ResidualBlock(width),
            ResidualBlock(width),
            nn.Conv2d(width, 2 * latent_channels, 3, 1, 1),  # 2 d_VAE / 8² channels
        )

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        mean, logvar = self.net(images).chunk(2, dim=1)
        return mean, logvar


class Decoder(nn.Module):
    """Latent ``[B, latent, h, w]`` -> Bernoulli logits ``[B, C, 8h, 8w]``."""

    def __init__(self, channels: int, width: int = 64, latent_channels: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            conv_act_norm(latent_channels, width),
            ResidualBlock(width),
            ResidualBlock(width),
            nn.ConvTranspose2d(width, width, 4, 2, 1),  # between two blocks: no activation, no norm
            ResidualBlock(width),
            nn.ConvTranspose2d(width, width, 4, 2, 1),
            ResidualBlock(width),
        )
        self.output = nn.Conv2d(width, channels, 3, 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        features = self.net(z)
        # The last upsampling: bilinear interpolation and an ordinary convolution (appendix B).
        features = F.interpolate(features, scale_factor=2, mode="bilinear", align_corners=False)
        return self.output(features)
