"""LAVAE's networks (Dittadi & Winther 2019, appendix B): the two inference nets, the sprite
decoder f_sprite and the auxiliary fully convolutional VAE of the warm-up.

- :class:`ResidualNet`: a stem convolution, then ``blocks`` residual blocks of 2 convolutions,
  every convolution followed by Leaky ReLU and batch norm, at the input's resolution (h_app and
  h_loc have "the same spatial size as x", §3).
- :class:`AppearanceNet`: a residual net and a last convolution giving h_app (2L channels: the
  means and log-variances of q(z_app | z_loc, x), Eq. 9-10).
- :class:`LocationNet`: an identical, independent residual net, then a 3-layer convolutional
  net with one output channel, the location logits h_loc, multiplied by γ (appendix B).
- :class:`SpriteDecoder`: f_sprite. A fully connected layer, a convolution and a bilinear
  interpolation to the sprite size; z_app broadcast and concatenated along the channels; 3
  residual blocks (the last without activation and norm) and a last convolution with a sigmoid.
- :class:`AuxiliaryVAE`: the warm-up's fully convolutional VAE, whose location-wise KL map
  supervises h_loc (appendix B, "Training warm-up"; Nash et al. 2017).

Where the paper is silent (docs/methods/lavae.md): kernel sizes (3×3), widths (``width``
everywhere), the size the fully connected layer reshapes to (sprite size / 4, rounded up), and
the auxiliary VAE's resampling (two stride-2 convolutions; a last unpadded convolution whose
kernel brings H/4 to the 11×11 latent grid).
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from objdecomp.methods.conv_vae.networks import LEAKY_SLOPE, ResidualBlock, conv_act_norm


class ResidualNet(nn.Module):
    """Image ``[B, C, H, W]`` -> features ``[B, width, H, W]`` (stem + residual blocks)."""

    def __init__(self, channels: int, width: int, blocks: int = 4):
        super().__init__()
        self.net = nn.Sequential(conv_act_norm(channels, width),
                                 *[ResidualBlock(width) for _ in range(blocks)])

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


class AppearanceNet(nn.Module):
    """h_app: ``[B, 2L, H, W]``, the mean and log-variance of z_app at every location (Eq. 9)."""

    def __init__(self, channels: int, width: int, latent_dim: int, blocks: int = 4):
        super().__init__()
        self.features = ResidualNet(channels, width, blocks)
        self.output = nn.Conv2d(width, 2 * latent_dim, 3, 1, 1)

    def forward(self, images: Tensor) -> Tensor:
        return self.output(self.features(images))


class LocationNet(nn.Module):
    """h_loc: ``[B, H, W]`` location logits, already multiplied by γ (appendix B)."""

    def __init__(self, channels: int, width: int, gamma: float = 4.0, blocks: int = 4):
        super().__init__()
        self.gamma = gamma
        self.features = ResidualNet(channels, width, blocks)
        self.head = nn.Sequential(conv_act_norm(width, width), conv_act_norm(width, width),
                                  nn.Conv2d(width, 1, 3, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        return self.gamma * self.head(self.features(images))[:, 0]


class SpriteDecoder(nn.Module):
    """f_sprite: z_app ``[P, L]`` -> sprites ``[P, C, S, S]`` in [0, 1] (appendix B)."""

    def __init__(self, latent_dim: int, channels: int, sprite_size: int, width: int):
        super().__init__()
        self.sprite_size = sprite_size
        self.base = math.ceil(sprite_size / 4)
        self.fc = nn.Sequential(nn.Linear(latent_dim, width * self.base ** 2),
                                nn.LeakyReLU(LEAKY_SLOPE), nn.BatchNorm1d(width * self.base ** 2))
        self.conv = conv_act_norm(width, width)
        self.merge = conv_act_norm(width + latent_dim, width)  # after the concatenation of z
        self.blocks = nn.Sequential(ResidualBlock(width), ResidualBlock(width))
        # The last residual block has neither activation nor batch norm (appendix B).
        self.last_block = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.LeakyReLU(LEAKY_SLOPE),
                                        nn.Conv2d(width, width, 3, 1, 1))
        self.output = nn.Conv2d(width, channels, 3, 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        x = self.fc(z).view(len(z), -1, self.base, self.base)
        x = F.interpolate(self.conv(x), size=self.sprite_size, mode="bilinear", align_corners=False)
        tiled = z[:, :, None, None].expand(-1, -1, self.sprite_size, self.sprite_size)
        x = self.blocks(self.merge(torch.cat([x, tiled], 1)))
        x = x + self.last_block(x)
        return torch.sigmoid(self.output(x))


class AuxiliaryVAE(nn.Module):
    """The warm-up's fully convolutional VAE with a ``latent × side × side`` latent tensor.

    Encoder: 3 residual blocks with stride-2 convolutions between them, then an unpadded
    convolution to ``2 · latent`` channels on the ``side × side`` grid (11×11×8 at 64×64);
    the decoder mirrors it and returns Bernoulli logits.
    """

    def __init__(self, channels: int, image_size: int, width: int, latent: int = 8,
                 side: int = 11):
        super().__init__()
        reduced = image_size // 4
        kernel = reduced - side + 1
        if image_size % 4 or kernel < 1:
            raise ValueError(f"the auxiliary VAE needs image_size divisible by 4 with "
                             f"image_size/4 >= side; got {image_size} and side {side}")
        self.kernel = kernel
        self.encoder = nn.Sequential(
            conv_act_norm(channels, width), ResidualBlock(width),
            nn.Conv2d(width, width, 4, 2, 1), ResidualBlock(width),
            nn.Conv2d(width, width, 4, 2, 1), ResidualBlock(width),
            nn.Conv2d(width, 2 * latent, kernel))
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(latent, width, kernel), nn.LeakyReLU(LEAKY_SLOPE),
            nn.BatchNorm2d(width), ResidualBlock(width),
            nn.ConvTranspose2d(width, width, 4, 2, 1), ResidualBlock(width),
            nn.ConvTranspose2d(width, width, 4, 2, 1), ResidualBlock(width),
            nn.Conv2d(width, channels, 3, 1, 1))

    def kl_map_on_pixels(self, kl_map: Tensor) -> Tensor:
        """The location-wise KL ``[B, 1, side, side]`` on the image's pixels ``[B, H, W]``:
        upsampled 4× (the encoder's stride, bilinear) and shifted by the last convolution's
        border, so that each latent cell's value lands on the centre of the pixels it sees
        (a plain resize to H × W would stretch the map away from the objects near the borders)."""
        border = 2 * (self.kernel - 1)  # (kernel − 1)/2 cells of 4 pixels on each side
        upsampled = F.interpolate(kl_map, scale_factor=4, mode="bilinear", align_corners=False)
        return F.pad(upsampled, (border,) * 4, mode="replicate")[:, 0]

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Logits of the reconstruction from one posterior sample, posterior mean, log-variance."""
        mean, logvar = self.encoder(images).chunk(2, 1)
        z = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        return self.decoder(z), mean, logvar
