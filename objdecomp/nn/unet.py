"""MONet's attention network: a U-Net that splits the unexplained scope (Burgess et al. 2019).

Appendix B.2 of MONet: a U-Net of ``len(channels)`` down and as many up blocks, each a 3×3
convolution, instance normalisation, ReLU and a resampling by 2 (max-pooling down, nearest
neighbour up), with skip tensors between the two paths and a 3-layer MLP at the bottleneck;
a last 1×1 convolution gives one logit per pixel. Its input is the image and the log of the
scope, the fraction of every pixel that no earlier step has explained; the logit's
log-sigmoids give log α and log(1 − α) in a numerically stable form. The paper gives 5 blocks
for 64×64 images and the MLP's 128-unit layers; the per-block channels are not given (our
default, 32-64-64-128-128, is the usual re-implementations' choice; docs/methods/monet.md).

:func:`recurrent_attention` runs it K − 1 times: m_k = s_{k−1} α_k, s_k = s_{k−1}(1 − α_k),
and the last component takes the rest, m_K = s_{K−1} (MONet §2, Eq. before Eq. 1). Everything
stays in log space, so masks near 0 keep their gradients.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_norm_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3×3 convolution, instance normalisation (with affine parameters), ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.InstanceNorm2d(out_channels, affine=True), nn.ReLU())


class AttentionUNet(nn.Module):
    """``[B, C, H, W]`` image and ``[B, 1, H, W]`` log scope -> ``[B, 1, H, W]`` attention logit.

    Args:
        in_channels: image channels (the log scope is one more).
        channels: channels of each down block, the up blocks mirror them (MONet: 5 blocks).
        mlp_hidden: width of the bottleneck MLP's hidden layers (MONet: 128).
        image_size: side of the input, which fixes the bottleneck's size
            (``image_size / 2**len(channels)``; it must divide exactly).
    """

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (32, 64, 64, 128, 128),
                 mlp_hidden: int = 128, image_size: int = 64):
        super().__init__()
        channels = list(channels)
        depth = len(channels)
        if image_size % 2**depth:
            raise ValueError(f"image_size {image_size} is not divisible by 2**{depth} "
                             f"({depth} down blocks)")
        self.bottleneck_size = image_size // 2**depth
        self.down = nn.ModuleList()
        previous = in_channels + 1
        for width in channels:
            self.down.append(conv_norm_relu(previous, width))
            previous = width
        features = channels[-1] * self.bottleneck_size**2
        # Three hidden layers, the last projecting back to the bottleneck's shape.
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(features, mlp_hidden), nn.ReLU(),
                                 nn.Linear(mlp_hidden, mlp_hidden), nn.ReLU(),
                                 nn.Linear(mlp_hidden, features), nn.ReLU())
        # Up block i sees the (upsampled) path and the skip of down block i, from the deepest.
        self.up = nn.ModuleList()
        previous = channels[-1]
        for width, skip in zip(reversed([channels[0]] + channels[:-1]), reversed(channels)):
            self.up.append(conv_norm_relu(previous + skip, width))
            previous = width
        self.output = nn.Conv2d(previous, 1, 1)

    def forward(self, images: Tensor, log_scope: Tensor) -> Tensor:
        x = torch.cat([images, log_scope], 1)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.mlp(x).view_as(x)
        for block, skip in zip(self.up, reversed(skips)):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(torch.cat([x, skip], 1))
        return self.output(x)


def recurrent_attention(network: AttentionUNet, images: Tensor, num_slots: int) -> Tensor:
    """Log masks ``[B, K, H, W]`` (their exponentials sum to 1 over K) from K − 1 attention steps.

    Step k splits the scope s_{k−1} into the mask m_k = s_{k−1} α_k and the new scope
    s_k = s_{k−1} (1 − α_k); s_0 = 1 and the last mask is the final scope (MONet §2).
    """
    b, _, h, w = images.shape
    log_scope = images.new_zeros(b, 1, h, w)
    log_masks = []
    for _ in range(num_slots - 1):
        logit = network(images, log_scope)
        log_masks.append(log_scope + F.logsigmoid(logit))
        log_scope = log_scope + F.logsigmoid(-logit)  # log(1 − α) = log σ(−logit)
    log_masks.append(log_scope)
    return torch.cat(log_masks, 1)
