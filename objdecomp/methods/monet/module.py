"""MONet (Burgess et al. 2019), as users know it and as CIS re-implemented it for its Table 1.

An attention network splits the image into K soft masks m_k; one component VAE, shared by the
K slots, encodes the image under each mask into z_k and decodes an appearance μ_k and a mask
logit. Training minimises, per image (MONet Eq. 3),

    −log Σ_k m_k p(x | z_k)  +  β Σ_k KL(q(z_k | x, m_k) || N(0, I))  +  γ KL(m || m̃),

the negative log-likelihood of the pixel-wise mixture (Gaussian components of fixed scale:
σ_bg for the first slot, σ_fg for the others), the latents' KL, and the KL between the
attention masks and the decoded ones m̃ = softmax_k(mask logits), summed over pixels.

- :class:`MONet`: Burgess et al.'s recurrent attention network with the scope
  (:mod:`objdecomp.nn.unet`), K − 1 U-Net passes, the last slot taking the rest.
- :class:`MONetSegmentation`: CIS §4.2 ("we re-implemented MONet by training the same K-way
  segmentation network in our framework but using the same loss"): CIS's Ω
  (:mod:`objdecomp.nn.segmentation`) gives all K masks at once by a softmax.

Decomposition: the attention masks, the decoded means at the posterior means as layers, their
mask-weighted sum as the reconstruction; slot 0 (the σ_bg slot) is the background.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from objdecomp.methods.base import DecompositionModule
from objdecomp.methods.monet.networks import ComponentVAE
from objdecomp.methods.monet.pictures import latent_traversal
from objdecomp.nn.segmentation import SegmentationNet
from objdecomp.nn.unet import AttentionUNet, recurrent_attention
from objdecomp.nn.vae import gaussian_kl, gaussian_pixel_log_likelihood
from objdecomp.schedules import ScheduleOrNumber, log_schedules
from objdecomp.training import ExactResume, NonFiniteLossGuard
from objdecomp.types import Decomposition


class MONetBase(DecompositionModule):
    """MONet's component VAE and loss; subclasses give the masks (:meth:`log_masks`).

    Args:
        image_size, channels, max_objects, num_classes, num_background, init_checkpoint:
            dataset facts and warm start (see :class:`DecompositionModule`).
        num_slots: K (``None``: one per object plus one, ``max_objects + 1``).
        latent_dim, encoder_widths, encoder_hidden, decoder_width, decoder_layers: the
            component VAE (:class:`~objdecomp.methods.monet.networks.ComponentVAE`).
        beta: weight of the latents' KL (MONet: 0.5), a number or a schedule.
        gamma: weight of the mask KL (MONet: 0.5), a number or a schedule.
        sigma_bg, sigma_fg: scales of the Gaussian likelihood of slot 0 and of the others
            (MONet: 0.09 and 0.11).
        lr: learning rate (MONet: RMSProp at 1e-4).
        optimizer: ``"rmsprop"`` (MONet) or ``"adam"``.
        resolution: side the model works at (images resized by area averaging; masks and
            layers resized back bilinearly for the decomposition); ``None``: the data's.
    """

    def __init__(self, image_size: int, channels: int, max_objects: int, num_classes: int,
                 num_background: int, init_checkpoint: Optional[str], num_slots: Optional[int],
                 latent_dim: int, encoder_widths: Sequence[int], encoder_hidden: int,
                 decoder_width: int, decoder_layers: int, beta: ScheduleOrNumber,
                 gamma: ScheduleOrNumber, sigma_bg: float, sigma_fg: float, lr: float,
                 optimizer: str, resolution: Optional[int]):
        super().__init__(image_size, channels, max_objects, num_classes, num_background,
                         init_checkpoint)
        if optimizer not in ("rmsprop", "adam"):
            raise ValueError(f"optimizer must be 'rmsprop' or 'adam', got {optimizer!r}")
        self.num_slots = num_slots or max_objects + 1
        self.resolution = resolution or image_size
        self.beta, self.gamma = beta, gamma
        self.vae = ComponentVAE(channels, self.resolution, latent_dim, encoder_widths,
                                encoder_hidden, decoder_width, decoder_layers)
        scales = torch.full((self.num_slots,), sigma_fg)
        scales[0] = sigma_bg
        self.register_buffer("scales", scales, persistent=False)

    def log_masks(self, images: Tensor) -> Tensor:
        """``[B, K, h, w]`` log attention masks of images at the working resolution."""
        raise NotImplementedError

    # --- the model ------------------------------------------------------------------------
    def working_images(self, images: Tensor) -> Tensor:
        if images.shape[-1] == self.resolution and images.shape[-2] == self.resolution:
            return images
        return F.interpolate(images, size=(self.resolution, self.resolution), mode="area")

    def loss_terms(self, images: Tensor) -> Dict[str, Tensor]:
        """Per-image terms of MONet's loss ``[B]`` (nats), at the working resolution."""
        x = self.working_images(images)
        log_masks = self.log_masks(x)
        out = self.vae(x, log_masks)
        # log p(x | z_k) per pixel, each slot with its own scale: [B, K, h, w].
        log_likelihood = torch.stack([
            gaussian_pixel_log_likelihood(out["means"][:, k], x, float(self.scales[k]))
            for k in range(self.num_slots)], 1)
        nll = -torch.logsumexp(log_masks + log_likelihood, 1).flatten(1).sum(1)
        decoded_log_masks = out["mask_logits"].log_softmax(1)
        mask_kl = (log_masks.exp() * (log_masks - decoded_log_masks)).flatten(1).sum(1)
        return {"nll": nll, "kl": gaussian_kl(out["mean"], out["logvar"]), "mask_kl": mask_kl}

    def decompose(self, images: Tensor) -> Decomposition:
        log_masks = self.log_masks(self.working_images(images))
        means, _ = self.vae.decode(self.vae.encode(self.working_images(images), log_masks)[0])
        masks = log_masks.exp()
        size = images.shape[-2:]
        if masks.shape[-2:] != size:  # bilinear weights are convex: the masks still sum to 1
            masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
            means = F.interpolate(means.flatten(1, 2), size=size, mode="bilinear",
                                  align_corners=False).unflatten(1, means.shape[1:3])
        masks = masks / masks.sum(1, keepdim=True)
        recon = (masks[:, :, None] * means).sum(1)
        background = torch.arange(self.num_slots, device=images.device) == 0
        return Decomposition(recon=recon, masks=masks, background=background, layers=means)

    # --- training -------------------------------------------------------------------------
    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        terms = {name: value.mean() for name, value in self.loss_terms(batch["image"]).items()}
        weights = log_schedules(self, {"beta": self.beta, "gamma": self.gamma})
        loss = terms["nll"] + weights["beta"] * terms["kl"] + weights["gamma"] * terms["mask_kl"]
        self.log_losses({"loss": loss, **terms})
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.hparams.optimizer == "rmsprop":  # MONet appendix B.3
            return torch.optim.RMSprop(self.parameters(), lr=self.hparams.lr)
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def configure_callbacks(self):
        return [ExactResume(), NonFiniteLossGuard()]

    def pictures(self, batch: Mapping[str, Tensor], decomposition: Decomposition
                 ) -> Dict[str, Tensor]:
        """A latent traversal of the largest foreground slot of the first image."""
        return {"traversal": latent_traversal(self, batch["image"][:1])}


class MONet(MONetBase):
    """MONet with Burgess et al.'s recurrent attention network (module docstring).

    Args:
        unet_channels: channels of the attention U-Net's blocks (MONet: 5 blocks at 64×64;
            the channels are not given).
        unet_mlp_hidden: hidden units of its bottleneck MLP (MONet: 128).
        others: see :class:`MONetBase`.
    """

    def __init__(self, image_size: int = 64, channels: int = 3, max_objects: int = 4,
                 num_classes: int = 0, num_background: int = 1,
                 init_checkpoint: Optional[str] = None, num_slots: Optional[int] = None,
                 unet_channels: Sequence[int] = (32, 64, 64, 128, 128), unet_mlp_hidden: int = 128,
                 latent_dim: int = 16, encoder_widths: Sequence[int] = (32, 32, 64, 64),
                 encoder_hidden: int = 256, decoder_width: int = 32, decoder_layers: int = 4,
                 beta: ScheduleOrNumber = 0.5, gamma: ScheduleOrNumber = 0.5,
                 sigma_bg: float = 0.09, sigma_fg: float = 0.11, lr: float = 1e-4,
                 optimizer: str = "rmsprop", resolution: Optional[int] = None):
        super().__init__(image_size, channels, max_objects, num_classes, num_background,
                         init_checkpoint, num_slots, latent_dim, encoder_widths, encoder_hidden,
                         decoder_width, decoder_layers, beta, gamma, sigma_bg, sigma_fg, lr,
                         optimizer, resolution)
        # Schedules stay out of the checkpoint (weights_only loading; docs/adding_a_method.md).
        self.save_hyperparameters(ignore=["beta", "gamma"])
        self.attention = AttentionUNet(channels, unet_channels, unet_mlp_hidden, self.resolution)

    def log_masks(self, images: Tensor) -> Tensor:
        return recurrent_attention(self.attention, images, self.num_slots)


class MONetSegmentation(MONetBase):
    """MONet as CIS re-implemented it for Table 1: Ω's K masks, MONet's loss (module docstring).

    Args:
        backbone, width, dilations, input_size: CIS's segmentation network Ω
            (:class:`~objdecomp.nn.segmentation.SegmentationNet`).
        num_slots: K (CIS Table 1: 6).
        others: see :class:`MONetBase`.
    """

    def __init__(self, image_size: int = 64, channels: int = 3, max_objects: int = 4,
                 num_classes: int = 0, num_background: int = 1,
                 init_checkpoint: Optional[str] = None, num_slots: Optional[int] = 6,
                 backbone: str = "resnet50", width: int = 64,
                 dilations: Sequence[int] = (2, 4, 6, 8), input_size: Optional[int] = None,
                 latent_dim: int = 16, encoder_widths: Sequence[int] = (32, 32, 64, 64),
                 encoder_hidden: int = 256, decoder_width: int = 32, decoder_layers: int = 4,
                 beta: ScheduleOrNumber = 0.5, gamma: ScheduleOrNumber = 0.5,
                 sigma_bg: float = 0.09, sigma_fg: float = 0.11, lr: float = 1e-4,
                 optimizer: str = "rmsprop", resolution: Optional[int] = None):
        super().__init__(image_size, channels, max_objects, num_classes, num_background,
                         init_checkpoint, num_slots, latent_dim, encoder_widths, encoder_hidden,
                         decoder_width, decoder_layers, beta, gamma, sigma_bg, sigma_fg, lr,
                         optimizer, resolution)
        self.save_hyperparameters(ignore=["beta", "gamma"])
        self.segmentation = SegmentationNet(channels, self.num_slots, backbone, width,
                                            dilations, input_size)

    def log_masks(self, images: Tensor) -> Tensor:
        return self.segmentation(images).log_softmax(1)
