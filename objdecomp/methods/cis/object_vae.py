"""CIS's per-object information-bottleneck VAE (Yang et al. 2020, Eq. 3–4 and Sec. 4.2).

For every segment Ω_k an appearance encoder q_φα reads the masked image x·Ω_k and a shape
encoder q_φs reads the mask Ω_k; the joint decoder p_θ maps z_k = [z_k^α, z_k^s] back to the
segment's appearance and mask; four convolutions fuse the K decoded segments into the image
("concatenated and fused through four convolutional layers with relu and sigmoid
activations"). Encoders and decoder follow Kim & Mnih (2018) (the paper's [22]): four 4×4
stride-2 convolutions of 32 channels, two fully connected layers of 256, and the mirror image
(bilinear ×2 + 4×4 convolution instead of transposed convolutions, as the authors' code).
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from objdecomp.nn.vae import reparameterize

DOWNSAMPLING = 16  # four stride-2 convolutions


class ConvEncoder(nn.Module):
    """Kim & Mnih's encoder: ``[N, C, H, W] -> (μ, log σ²)`` of ``latent`` dimensions."""

    def __init__(self, in_channels: int, latent: int, image_size: int, width: int = 32,
                 hidden: int = 256):
        super().__init__()
        layers, channels = [], in_channels
        for _ in range(4):
            layers += [nn.Conv2d(channels, width, 4, 2, 1), nn.ReLU(inplace=True)]
            channels = width
        side = image_size // DOWNSAMPLING
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(width * side * side, hidden),
                                nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                                nn.ReLU(inplace=True), nn.Linear(hidden, 2 * latent))

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        mean, logvar = self.fc(self.convs(x)).chunk(2, -1)
        return mean, logvar


class ConvDecoder(nn.Module):
    """The mirror image: ``[N, latent] -> [N, out_channels, H, W]`` (logits)."""

    def __init__(self, latent: int, out_channels: int, image_size: int, width: int = 32,
                 hidden: int = 256):
        super().__init__()
        self.side, self.width = image_size // DOWNSAMPLING, width
        self.fc = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(inplace=True),
                                nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                nn.Linear(hidden, width * self.side * self.side),
                                nn.ReLU(inplace=True))
        self.convs = nn.ModuleList(nn.Conv2d(width, width if i < 3 else out_channels, 4)
                                   for i in range(4))

    def forward(self, z: Tensor) -> Tensor:
        x = self.fc(z).view(-1, self.width, self.side, self.side)
        for i, conv in enumerate(self.convs):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = conv(F.pad(x, (1, 2, 1, 2)))  # TF's "SAME" for a 4×4 kernel
            if i < 3:
                x = F.relu(x)
        return x


class ObjectVAE(nn.Module):
    """The K per-object VAEs (shared weights) and the fusion of their outputs.

    Args:
        num_masks: K.
        image_size, channels: the images'.
        appearance_latent, shape_latent: sizes of z^α and z^s.
        width, hidden: convolution channels and fully connected units (32, 256 in [22]).
    """

    def __init__(self, num_masks: int, image_size: int, channels: int = 3,
                 appearance_latent: int = 5, shape_latent: int = 10, width: int = 32,
                 hidden: int = 256):
        super().__init__()
        if image_size % DOWNSAMPLING:
            raise ValueError(f"the object VAE needs an image size divisible by {DOWNSAMPLING}")
        self.channels, self.appearance_latent = channels, appearance_latent
        self.appearance_encoder = ConvEncoder(channels, appearance_latent, image_size, width, hidden)
        self.shape_encoder = ConvEncoder(1, shape_latent, image_size, width, hidden)
        self.decoder = ConvDecoder(appearance_latent + shape_latent, channels + 1, image_size,
                                   width, hidden)
        fusion, c = [], (channels + 1) * num_masks
        for out in (32, 32, 32, channels):
            fusion.append(nn.Conv2d(c, out, 3, padding=1))
            c = out
        self.fusion = nn.ModuleList(fusion)

    def encode(self, images: Tensor, masks: Tensor) -> Tuple[Tensor, Tensor]:
        """Posteriors of z_k = [z^α_k, z^s_k] for every mask: mean and log-variance ``[B, K, D]``."""
        b, k = masks.shape[:2]
        segments = (images[:, None] * masks[:, :, None]).flatten(0, 1)
        mean_a, logvar_a = self.appearance_encoder(segments)
        mean_s, logvar_s = self.shape_encoder(masks.flatten(0, 1)[:, None])
        mean = torch.cat([mean_a, mean_s], -1).unflatten(0, (b, k))
        return mean, torch.cat([logvar_a, logvar_s], -1).unflatten(0, (b, k))

    def decode(self, z: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """``z`` ``[B, K, D]`` -> appearances ``[B, K, C, H, W]`` in [0, 1], mask logits
        ``[B, K, H, W]`` and the fused image ``[B, C, H, W]``."""
        out = self.decoder(z.flatten(0, 1)).unflatten(0, z.shape[:2])
        appearance, mask_logits = out[:, :, : self.channels].sigmoid(), out[:, :, self.channels]
        x = torch.cat([appearance, mask_logits.sigmoid()[:, :, None]], 2).flatten(1, 2)
        for i, conv in enumerate(self.fusion):
            x = conv(x)
            x = F.relu(x) if i < len(self.fusion) - 1 else torch.sigmoid(x)
        return appearance, mask_logits, x

    def forward(self, images: Tensor, masks: Tensor) -> Dict[str, Tensor]:
        """One sample z_k ~ q(z_k | x·Ω_k, Ω_k) per segment, decoded; the terms of Eq. 4.

        Returns ``appearance_error`` (L1 inside the masks, summed over pixels, the code's),
        ``shape_error`` (sigmoid cross-entropy against the soft masks), ``fusion_error`` (L1 of
        the fused image), each summed per image and averaged over the batch, the per-dimension
        KLs averaged over the batch and summed over objects (``kl_appearance``, ``kl_shape``,
        ``[D]``), and the posterior means and outputs.
        """
        mean, logvar = self.encode(images, masks)
        appearance, mask_logits, fused = self.decode(reparameterize(mean, logvar))
        kl = 0.5 * (mean.square() + logvar.exp() - logvar - 1)  # [B, K, D] per dimension
        kl = kl.mean(0).sum(0)
        a = self.appearance_latent
        return {
            "appearance_error": ((appearance - images[:, None]).abs() * masks[:, :, None]
                                 ).sum((1, 2, 3, 4)).mean(),
            "shape_error": F.binary_cross_entropy_with_logits(
                mask_logits, masks, reduction="none").sum((1, 2, 3)).mean(),
            "fusion_error": (fused - images).abs().sum((1, 2, 3)).mean(),
            "kl_appearance": kl[:a], "kl_shape": kl[a:],
            "mean": mean, "appearance": appearance, "mask_logits": mask_logits, "recon": fused,
        }

