"""The convolutional β-VAE: the baseline of LAVAE (Dittadi & Winther 2019, §3 and appendix B).

A VAE whose latent variables form a 3D tensor (16 × 8 × 8 = d_VAE = 1024 for 64×64 images)
so that encoder and decoder are fully convolutional (:mod:`.networks`). Prior N(0, I), diagonal
Gaussian posterior, and pixel-wise Bernoulli likelihood: one term per pixel on multi-MNIST
(§3.1, Eq. 12), one per colour channel and pixel on LAVAE's multi-dSprites (§3.2).
Training minimises the β-weighted negative ELBO, −E_q[log p(x|z)] + β KL(q(z|x) || p(z)), with
β annealed linearly from 0 to 1 over the first 100k steps (appendix B, a schedule given in the
experiment file).

It decomposes trivially: one component owning every pixel, drawn from the posterior mean. Its
evaluation scores are the two upper bounds on −log p(x) of Table 1, in nats per image: the
negative ELBO (with β = 1) and the bound from 100 importance samples.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
from torch import Tensor
from torchvision.utils import make_grid

from objdecomp.methods.base import DecompositionModule
from objdecomp.methods.conv_vae.networks import Decoder, Encoder
from objdecomp.nn.vae import (bernoulli_log_likelihood, gaussian_kl, gaussian_log_density,
                              importance_log_weights, likelihood_bounds, reparameterize,
                              standard_normal_log_density)
from objdecomp.schedules import ScheduleOrNumber, log_schedules
from objdecomp.types import Decomposition
from objdecomp.visualize import to_rgb

DOWNSAMPLING = 8  # the encoder halves the resolution three times


class ConvVAE(DecompositionModule):
    """Fully convolutional β-VAE (LAVAE appendix B, "Baseline implementation").

    Args:
        image_size, channels, max_objects, num_classes, num_background, init_checkpoint:
            dataset facts and warm start (see :class:`DecompositionModule`).
        latent_channels: channels of the latent tensor; d_VAE = latent_channels · (H/8)(W/8)
            (16 gives the paper's 1024 at 64×64).
        width: channels of every hidden layer (64 after the encoder in the paper).
        beta: weight of the KL term, a number or a schedule (paper: linear 0 -> 1 over 100k
            steps).
        lr: Adamax learning rate (the paper gives 1e-3 for LAVAE; assumed for the baseline).
        importance_samples: K of the −log p(x) bound at test (Table 1: 100).
        val_importance_samples: K during validation (default 1, where the bound equals the
            ELBO: cheap enough to validate often).
        images_per_pass: bound on the decoder batch while estimating it (K/S passes of S
            samples for every image of the batch), which bounds memory whatever K.
    """

    evaluation_scores = ("neg_elbo", "nll_bound")

    def __init__(self, image_size: int = 64, channels: int = 1, max_objects: int = 1,
                 num_classes: int = 0, num_background: int = 1,
                 init_checkpoint: Optional[str] = None, latent_channels: int = 16,
                 width: int = 64, beta: ScheduleOrNumber = 1.0, lr: float = 1e-3,
                 importance_samples: int = 100, val_importance_samples: int = 1,
                 images_per_pass: int = 256):
        super().__init__(image_size, channels, max_objects, num_classes, num_background,
                         init_checkpoint)
        if image_size % DOWNSAMPLING:
            raise ValueError(f"image_size must be a multiple of {DOWNSAMPLING}, got {image_size}")
        # β stays out of the checkpoint: a schedule object there would need unpickling code
        # (no weights_only loading); training and resuming read it from the run's config.
        self.save_hyperparameters(ignore=["beta"])
        self.beta = beta
        self.encoder = Encoder(channels, width, latent_channels)
        self.decoder = Decoder(channels, width, latent_channels)

    # --- the model ------------------------------------------------------------------------
    def negative_elbo_terms(self, images: Tensor) -> Dict[str, Tensor]:
        """Per-image reconstruction term −log p(x|z), z ~ q(z|x) (one sample), and KL, in nats."""
        mean, logvar = self.encoder(images)
        logits = self.decoder(reparameterize(mean, logvar))
        return {"reconstruction": -bernoulli_log_likelihood(logits, images),
                "kl": gaussian_kl(mean, logvar)}

    def decompose(self, images: Tensor) -> Decomposition:
        mean, _ = self.encoder(images)
        recon = torch.sigmoid(self.decoder(mean))  # the Bernoulli means at the posterior mean
        b, _, h, w = images.shape
        return Decomposition(recon=recon, masks=recon.new_ones(b, 1, h, w),
                             background=torch.zeros(1, dtype=torch.bool, device=images.device),
                             layers=recon[:, None])

    @torch.no_grad()
    def sample(self, num_images: int) -> Tensor:
        """Bernoulli means decoded from prior samples z ~ N(0, I) (Figures 2 and 4, right)."""
        side = self.image_size // DOWNSAMPLING
        z = torch.randn(num_images, self.hparams.latent_channels, side, side, device=self.device)
        return torch.sigmoid(self.decoder(z))

    # --- training -------------------------------------------------------------------------
    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        terms = {name: value.mean() for name, value in
                 self.negative_elbo_terms(batch["image"]).items()}
        beta = log_schedules(self, {"beta": self.beta})["beta"]
        loss = terms["reconstruction"] + beta * terms["kl"]
        self.log_losses({"loss": loss, "neg_elbo": terms["reconstruction"] + terms["kl"], **terms})
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Appendix B: Adamax (stated for LAVAE; the baseline's optimiser is not given).
        return torch.optim.Adamax(self.parameters(), lr=self.hparams.lr)

    # --- evaluation -----------------------------------------------------------------------
    def score_images(self, batch: Mapping[str, Tensor], decomposition: Decomposition
                     ) -> Dict[str, Tensor]:
        """``neg_elbo`` and ``nll_bound`` per image, from the same K importance samples."""
        images = batch["image"]
        mean, logvar = self.encoder(images)

        def draw(num_samples: int) -> Tensor:
            z = reparameterize(mean, logvar, num_samples)  # [S, B, c, h, w]
            logits = self.decoder(z.flatten(0, 1)).unflatten(0, z.shape[:2])
            return (bernoulli_log_likelihood(logits, images) + standard_normal_log_density(z, 3)
                    - gaussian_log_density(z, mean, logvar, 3))

        per_pass = max(1, self.hparams.images_per_pass // len(images))
        return likelihood_bounds(importance_log_weights(draw, self._importance_samples(), per_pass))

    def _importance_samples(self) -> int:
        validating = self._trainer is not None and not self.trainer.testing
        return self.hparams.val_importance_samples if validating else self.hparams.importance_samples

    def pictures(self, batch: Mapping[str, Tensor], decomposition: Decomposition
                 ) -> Dict[str, Tensor]:
        """Prior samples beside the decomposition grid (its rows already show the inputs and
        their reconstructions)."""
        samples = to_rgb(self.sample(len(batch["image"])))
        return {"prior_samples": make_grid(samples, nrow=len(samples), padding=2, pad_value=1.0)}
