"""Variational-autoencoder parts shared by the β-VAE baseline and LAVAE (Dittadi & Winther 2019).

- Diagonal Gaussian posteriors: :func:`reparameterize`, :func:`gaussian_log_density` and the
  closed-form KL to the standard-normal prior, :func:`gaussian_kl`.
- The likelihood of both LAVAE data sets, :func:`bernoulli_log_likelihood`. Multi-MNIST is
  binary (§3.1, Eq. 12: one Bernoulli per pixel). LAVAE's multi-dSprites uses 7 saturated
  colours, so every colour channel of every pixel is 0 or 1 and is modelled as an independent
  Bernoulli variable too (§3.2: 3D terms instead of D); one function serves both.
- The evaluation of Table 1: :func:`likelihood_bounds`, the ELBO and the importance-sampling
  bound on −log p(x) with K posterior samples (K = 100 in the paper), drawn in chunks so that
  memory stays bounded whatever K.
- MONet's component VAE (Burgess et al. 2019): the Gaussian likelihood of fixed scale,
  :func:`gaussian_pixel_log_likelihood`, and the spatial-broadcast decoder
  (Watters et al. 2019), :class:`SpatialBroadcastDecoder`.

All log densities are in nats and summed over the non-batch dimensions (one value per image).
"""

from __future__ import annotations

import math
from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOG_2PI = math.log(2 * math.pi)


def reparameterize(mean: Tensor, logvar: Tensor, num_samples: int = 0) -> Tensor:
    """A sample of N(mean, exp(logvar)) that gradients flow through (Kingma & Welling 2014).

    With ``num_samples > 0`` the samples are stacked in a new leading dimension ``[S, ...]``.
    """
    shape = (num_samples, *mean.shape) if num_samples else mean.shape
    noise = torch.randn(shape, dtype=mean.dtype, device=mean.device)
    return mean + (0.5 * logvar).exp() * noise


def gaussian_log_density(z: Tensor, mean: Tensor, logvar: Tensor, event_dims: int) -> Tensor:
    """log N(z; mean, diag(exp(logvar))), summed over the last ``event_dims`` dimensions."""
    terms = -0.5 * (LOG_2PI + logvar + (z - mean).square() * (-logvar).exp())
    return terms.flatten(-event_dims).sum(-1)


def standard_normal_log_density(z: Tensor, event_dims: int) -> Tensor:
    """log N(z; 0, I), summed over the last ``event_dims`` dimensions."""
    return (-0.5 * (LOG_2PI + z.square())).flatten(-event_dims).sum(-1)


def gaussian_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, diag(exp(logvar))) || N(0, I)) per item ``[B]``, in closed form.

    Per dimension: ½ (μ² + σ² − log σ² − 1) (Kingma & Welling 2014, appendix B).
    """
    return 0.5 * (mean.square() + logvar.exp() - logvar - 1).flatten(1).sum(1)


def bernoulli_log_likelihood(logits: Tensor, images: Tensor) -> Tensor:
    """Σ_d log Bernoulli(x_d; sigmoid(logit_d)) over the last three dimensions (C, H, W).

    Works from logits for numerical stability (the paper's decoder ends in a sigmoid: its
    output is ``sigmoid(logits)``). ``images`` broadcast against ``logits``, so ``[S, B, C, H,
    W]`` logits of S latent samples score ``[B, C, H, W]`` images, giving ``[S, B]``.
    """
    images = images.expand_as(logits)
    return -F.binary_cross_entropy_with_logits(logits, images, reduction="none").sum((-3, -2, -1))


def log_mean_exp(values: Tensor, dim: int = 0) -> Tensor:
    """log (1/K Σ_k exp(values_k)) along ``dim``, computed stably."""
    return torch.logsumexp(values, dim) - math.log(values.shape[dim])


def importance_log_weights(draw: Callable[[int], Tensor], num_samples: int = 100,
                           samples_per_call: int = 10) -> Tensor:
    """Log importance weights ``[K, B]`` gathered over calls of ``draw``.

    Args:
        draw: ``draw(S)`` draws S samples z_s ~ q(z | x) for every image of the batch and
            returns ``log p(x, z_s) − log q(z_s | x)`` as ``[S, B]``.
        num_samples: K.
        samples_per_call: samples per call, which bounds the memory of the decoder passes.
    """
    chunks = []
    for start in range(0, num_samples, samples_per_call):
        chunks.append(draw(min(samples_per_call, num_samples - start)))
    return torch.cat(chunks)


def likelihood_bounds(log_weights: Tensor) -> Dict[str, Tensor]:
    """Two upper bounds on −log p(x) per image from log weights ``[K, B]`` (nats).

    - ``neg_elbo``: −(1/K) Σ_k log w_k, the negative ELBO (Eq. 6) estimated with K samples.
    - ``nll_bound``: −log (1/K) Σ_k w_k, the importance-sampled bound of Table 1 (Burda et al.
      2016); it tightens as K grows and never exceeds ``neg_elbo`` on the same samples
      (Jensen's inequality).
    """
    return {"neg_elbo": -log_weights.mean(0), "nll_bound": -log_mean_exp(log_weights, 0)}


def gaussian_pixel_log_likelihood(means: Tensor, images: Tensor, scale: float) -> Tensor:
    """log N(x; μ, scale²) per pixel, summed over the colour channels (dimension −3).

    ``means`` ``[..., C, H, W]`` broadcast against ``images``; returns ``[..., H, W]``. A fixed
    scale (MONet: σ = 0.09 for the background component, 0.11 for the others) makes this a
    weighted squared error plus a constant.
    """
    terms = -0.5 * (LOG_2PI + 2 * math.log(scale) + ((images - means) / scale).square())
    return terms.sum(-3)


class SpatialBroadcastDecoder(nn.Module):
    """Latent ``[B, latent]`` -> ``[B, out_channels, H, W]`` (Watters et al. 2019).

    The latent vector is tiled over a ``(H + 2·layers) × (W + 2·layers)`` grid, two coordinate
    channels in [−1, 1] are appended, and ``layers`` unpadded 3×3 convolutions with ReLU bring
    it back to H × W; a 1×1 convolution gives the outputs. MONet's component decoder: 4 layers
    of 32 channels, 4 outputs (RGB means and a mask logit).
    """

    def __init__(self, latent_dim: int, out_channels: int, image_size: int, width: int = 32,
                 layers: int = 4):
        super().__init__()
        self.image_size, self.margin = image_size, layers  # each unpadded 3x3 conv takes 2 px
        side = image_size + 2 * layers
        coords = torch.linspace(-1, 1, side)
        grid = torch.stack(torch.meshgrid(coords, coords, indexing="ij"))  # [2, side, side]
        self.register_buffer("grid", grid, persistent=False)
        blocks, previous = [], latent_dim + 2
        for _ in range(layers):
            blocks += [nn.Conv2d(previous, width, 3), nn.ReLU()]
            previous = width
        self.net = nn.Sequential(*blocks, nn.Conv2d(previous, out_channels, 1))

    def forward(self, z: Tensor) -> Tensor:
        side = self.grid.shape[-1]
        tiled = z[:, :, None, None].expand(-1, -1, side, side)
        grid = self.grid.to(z.dtype).expand(len(z), -1, -1, -1)
        return self.net(torch.cat([tiled, grid], 1))
