"""MONet's component VAE (Burgess et al. 2019, §2 and appendix B.2).

Encoder: the image and the log of one component's attention mask (4 channels) through four
3×3 convolutions of stride 2 (32, 32, 64, 64 channels, ReLU) and an MLP with one hidden layer
of 256 units to the means and log-variances of a 16-dimensional latent.
Decoder: a spatial-broadcast decoder (:class:`~objdecomp.nn.vae.SpatialBroadcastDecoder`, 4
unpadded 3×3 convolutions of 32 channels) to 4 channels: the component's RGB means and the
logit of its reconstructed mask. All K components share one VAE, run as one batch of B·K.
The RGB means go through a sigmoid (the paper does not say; images live in [0, 1]).
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch
from torch import Tensor, nn

from objdecomp.nn.vae import SpatialBroadcastDecoder, reparameterize


class ComponentEncoder(nn.Module):
    """Image ``[N, C, H, W]`` and log mask ``[N, 1, H, W]`` -> means, log-variances ``[N, latent]``."""

    def __init__(self, channels: int, image_size: int, latent_dim: int = 16,
                 widths: Sequence[int] = (32, 32, 64, 64), hidden: int = 256):
        super().__init__()
        layers, previous, side = [], channels + 1, image_size
        for width in widths:
            layers += [nn.Conv2d(previous, width, 3, stride=2, padding=1), nn.ReLU()]
            previous, side = width, (side + 1) // 2
        self.convs = nn.Sequential(*layers, nn.Flatten())
        self.mlp = nn.Sequential(nn.Linear(previous * side * side, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2 * latent_dim))

    def forward(self, images: Tensor, log_masks: Tensor):
        mean, logvar = self.mlp(self.convs(torch.cat([images, log_masks], 1))).chunk(2, 1)
        return mean, logvar


class ComponentVAE(nn.Module):
    """q(z_k | x, m_k) and p(x, m̃_k | z_k), for the K components of a batch at once.

    Args:
        channels, image_size: of the images.
        latent_dim: size of each z_k (MONet: 16).
        encoder_widths: the encoder's convolution channels (MONet: 32, 32, 64, 64).
        encoder_hidden: the encoder MLP's hidden units (MONet: 256).
        decoder_width, decoder_layers: the broadcast decoder's convolutions (MONet: 4 of 32).
    """

    def __init__(self, channels: int = 3, image_size: int = 64, latent_dim: int = 16,
                 encoder_widths: Sequence[int] = (32, 32, 64, 64), encoder_hidden: int = 256,
                 decoder_width: int = 32, decoder_layers: int = 4):
        super().__init__()
        self.channels = channels
        self.encoder = ComponentEncoder(channels, image_size, latent_dim, encoder_widths,
                                        encoder_hidden)
        self.decoder = SpatialBroadcastDecoder(latent_dim, channels + 1, image_size,
                                               decoder_width, decoder_layers)

    def encode(self, images: Tensor, log_masks: Tensor):
        """``[B, C, H, W]``, ``[B, K, H, W]`` -> means and log-variances ``[B, K, latent]``."""
        b, k = log_masks.shape[:2]
        repeated = images[:, None].expand(-1, k, -1, -1, -1).flatten(0, 1)
        mean, logvar = self.encoder(repeated, log_masks.flatten(0, 1)[:, None])
        return mean.unflatten(0, (b, k)), logvar.unflatten(0, (b, k))

    def decode(self, z: Tensor):
        """``[B, K, latent]`` -> RGB means ``[B, K, C, H, W]`` and mask logits ``[B, K, H, W]``."""
        out = self.decoder(z.flatten(0, 1)).unflatten(0, z.shape[:2])
        return torch.sigmoid(out[:, :, :self.channels]), out[:, :, self.channels]

    def forward(self, images: Tensor, log_masks: Tensor, sample: bool = True) -> Dict[str, Tensor]:
        mean, logvar = self.encode(images, log_masks)
        z = reparameterize(mean, logvar) if sample else mean
        means, mask_logits = self.decode(z)
        return {"mean": mean, "logvar": logvar, "z": z, "means": means, "mask_logits": mask_logits}
