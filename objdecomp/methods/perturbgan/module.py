"""PerturbGAN: unsupervised object segmentation by perturbed layered generation
(Bielski & Favaro, NeurIPS 2019).

Stage one (``stage="gan"``, §3.1–3.2, §4): a layered StyleGAN G = (G_B, G_F, G_m) is trained
against a progressive StyleGAN discriminator on composites whose foreground and mask are moved
by a random shift Δ the generator does not know (Eq. 2), with WGAN-GP (Eq. 6), a hinge on the
mean mask size (Eq. 3) and a binarisation term (Eq. 4) in the generator loss (Eq. 5).

Stage two (``stage="encoder"``, §3.3, §4): the EMA generator is frozen and used as a decoder;
an encoder E maps a real image to the generators' per-layer AdaIN styles so that the composite
matches the image (Eq. 7: L1 + a perceptual loss on the trained discriminator's 8×8 features).
The object mask of a real image is then G_m(E(x)) binarised at 0.5. ``chunk_size`` switches to
the paper's per-chunk protocol: a fresh encoder trained on each chunk of evaluated images
(:mod:`~objdecomp.methods.perturbgan.chunks`).

``decompose`` always reads images through E: in stage one, E is untrained and real-image
metrics mean nothing yet (the ``train/mask_*`` statistics of generated masks do).
docs/methods/perturbgan.md lists where the configs follow the authors' code rather than the text.
"""

from __future__ import annotations

import copy
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import Metric

from objdecomp.compositing import over
from objdecomp.methods.base import DecompositionModule
from objdecomp.methods.perturbgan import evaluation
from objdecomp.methods.perturbgan.chunks import encode_by_fitting
from objdecomp.methods.perturbgan.growing import Phase, ProgressiveGrowing
from objdecomp.methods.perturbgan.networks import Layers, LayeredGenerator, StyleEncoder
from objdecomp.methods.perturbgan.perturbation import contrast_jitter, resize_and_crop, shift_object
from objdecomp.methods.perturbgan.pictures import samples_figure
from objdecomp.nn.stylegan import (ProgressiveDiscriminator, gradient_penalty,
                                   wgan_gp_discriminator_loss)
from objdecomp.training import (AlternatingUpdates, EmulatedBF16Warning, ExactResume,
                                NonFiniteLossGuard, Player)
from objdecomp.types import Decomposition


def size_hinge(mask: Tensor, eta: float) -> Tensor:
    """Eq. 3: ``E[max(0, η − mean(m))]``, the mean over each image's pixels."""
    return F.relu(eta - mask.flatten(1).mean(1)).mean()


def binarisation(mask: Tensor) -> Tensor:
    """Eq. 4: ``E[min(m, 1 − m)]``."""
    return torch.minimum(mask, 1 - mask).mean()


class PerturbGAN(DecompositionModule):
    """Both stages of PerturbGAN; defaults are §4's (LSUN Car, 128×128).

    Args:
        stage: ``"gan"`` (train G and D) or ``"encoder"`` (train E through the frozen EMA G;
            start it with ``init_checkpoint`` = a stage-one checkpoint).
        latent_dim: size of z, w and every style (512).
        mapping_depth, mapping_lr_scale: the mapping networks' layers (8) and their learning
            rate multiplier (0.01), applied through the equalised-lr parametrisation.
        channel_base, channel_max: feature channels ``min(max, base / resolution)`` of G and D.
        generators: ``"two"`` StyleGANs (§4), ``"single"`` with 7 outputs (Table 1 row h), or
            ``"plain"``: Table 3's single-output GAN (no layers; run it with ``shift: 0``).
        mixing: style-mixing probability (0.9, §4).
        resolutions, batch_sizes, learning_rates, fade_images, stable_images: progressive
            growing (:class:`~objdecomp.methods.perturbgan.growing.ProgressiveGrowing`).
        shift: δ as a fraction of the current resolution (0.125, §4; 0 = Table 1 row b).
        contrast_jitter: background contrast factor range, e.g. ``(0.7, 1.3)`` (row d; None: off).
        random_crop, crop_scale: real images resized to ``crop_scale × resolution`` and randomly
            cropped (1.125, §4; ``random_crop=False`` = row e).
        min_mask, size_weight, binary_weight: η (Eq. 3), γ1 and γ2 (Eq. 5; 2 and 2).
        gp_weight, drift: λ and ε of Eq. 6 (10 and 0.001).
        betas: Adam betas of G and D ((0, 0.99), §4).
        ema_decay: EMA of G's weights per G step (samples, evaluation and stage two).
        encoder_backbone, encoder_size, encoder_width: E's trunk ("resnet18" at 64×64, §4;
            ``encoder_width`` only for the mini ResNets).
        encoder_lr, encoder_betas: Adam for E (1e-4, (0.9, 0.999), §4).
        perceptual_weight: weight of Eq. 7's second term (1: the paper adds them).
        chunk_size, chunk_iterations: when set, evaluation fits a fresh encoder on each chunk
            of ``chunk_size`` images for ``chunk_iterations`` iterations (§4: 100 and 1000).
        generated_metrics: stage one's test also scores as many generated scenes as real test
            images: ``"maskrcnn"`` (Table 1: ``<split>/maskrcnn_miou`` of the generated masks
            against Mask R-CNN's, and ``<split>/maskrcnn_detected``) and ``"fid"`` (Table 3:
            ``<split>/fid`` of the composites against the real images); see
            :mod:`~objdecomp.methods.perturbgan.evaluation`.
        reference_category: the COCO category Mask R-CNN is asked for (car for LSUN Car).
        detector_weights, inception_weights: files of Mask R-CNN's COCO weights and FID's
            Inception weights (None: fetched into torch's cache the first time).
    """

    # Evaluated on every split, with or without ground-truth masks (LSUN has none): the
    # autoencoding error of Eq. 7's L1 term in [0, 1] units, and the share of the object mask.
    evaluation_scores = ("recon_l1", "mask_area")

    def __init__(self, stage: str = "gan", latent_dim: int = 512, mapping_depth: int = 8,
                 mapping_lr_scale: float = 0.01, channel_base: int = 16384, channel_max: int = 512,
                 generators: str = "two", mixing: float = 0.9,
                 resolutions: Sequence[int] = (8, 16, 32, 64, 128),
                 batch_sizes: Sequence[int] = (256, 128, 64, 32, 32),
                 learning_rates: Sequence[float] = (1e-3, 1e-3, 1e-3, 1e-3, 1.5e-3),
                 fade_images: int = 600_000, stable_images: int = 600_000,
                 shift: float = 0.125, contrast_jitter: Optional[Tuple[float, float]] = None,
                 random_crop: bool = True, crop_scale: float = 1.125,
                 min_mask: float = 0.25, size_weight: float = 2.0, binary_weight: float = 2.0,
                 gp_weight: float = 10.0, drift: float = 0.001,
                 betas: Tuple[float, float] = (0.0, 0.99), ema_decay: float = 0.999,
                 encoder_backbone: str = "resnet18", encoder_size: int = 64, encoder_width: int = 16,
                 encoder_lr: float = 1e-4, encoder_betas: Tuple[float, float] = (0.9, 0.999),
                 perceptual_weight: float = 1.0, chunk_size: Optional[int] = None,
                 chunk_iterations: int = 1000, generated_metrics: Sequence[str] = (),
                 reference_category: str = "car", detector_weights: Optional[str] = None,
                 inception_weights: Optional[str] = None,
                 image_size: int = 128, channels: int = 3, max_objects: int = 1,
                 num_classes: int = 0, num_background: int = 1,
                 init_checkpoint: Optional[str] = None):
        super().__init__(image_size, channels, max_objects, num_classes, num_background,
                         init_checkpoint)
        if stage not in ("gan", "encoder"):
            raise ValueError(f"stage must be 'gan' or 'encoder', got {stage!r}")
        unknown = set(generated_metrics) - {"maskrcnn", "fid"}
        if unknown:
            raise ValueError(f"generated_metrics: unknown {sorted(unknown)}; choose from maskrcnn, fid")
        if "maskrcnn" in generated_metrics and generators == "plain":
            raise ValueError("generated_metrics: the single-output GAN generates no mask to score "
                             "against Mask R-CNN's (its Table 3 row needs only fid)")
        self.save_hyperparameters()
        self.stage = stage
        self.growing = ProgressiveGrowing(resolutions, batch_sizes, learning_rates, fade_images,
                                          stable_images)
        self.resolution = self.growing.resolutions[-1]
        self.generator = LayeredGenerator(self.resolution, latent_dim, mapping_depth,
                                          mapping_lr_scale, channel_base, channel_max, generators,
                                          channels, first_output=self.growing.resolutions[0])
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        self.discriminator = ProgressiveDiscriminator(self.resolution, channels, channel_base,
                                                      channel_max,
                                                      first_input=self.growing.resolutions[0])
        self.encoder_args = dict(num_styles=self.generator.num_styles, latent_dim=latent_dim,
                                 backbone=encoder_backbone, input_size=encoder_size,
                                 channels=channels, width=encoder_width)
        self.encoder = StyleEncoder(**self.encoder_args)
        # Each stage trains only its own networks (a frozen part is also not an unreached one).
        trained = (self.generator, self.discriminator) if stage == "gan" else (self.encoder,)
        for net in (self.generator, self.discriminator, self.encoder):
            net.requires_grad_(net in trained)
        if stage == "gan":
            self.automatic_optimization = False
            # The authors' order: one D step (Eq. 6), then one G step (Eq. 5) per batch.
            self.updates = AlternatingUpdates([Player("d"), Player("g")])
        self.latent_dim, self.mixing = latent_dim, mixing
        self.shift, self.jitter = shift, contrast_jitter
        self.random_crop, self.crop_scale = random_crop, crop_scale
        self.min_mask, self.size_weight, self.binary_weight = min_mask, size_weight, binary_weight
        self.gp_weight, self.drift = gp_weight, drift
        self.betas, self.ema_decay = tuple(float(b) for b in betas), ema_decay
        self.encoder_lr, self.encoder_betas = encoder_lr, tuple(float(b) for b in encoder_betas)
        self.perceptual_weight = perceptual_weight
        self.chunk_size, self.chunk_iterations = chunk_size, chunk_iterations
        self.generated_metrics = tuple(generated_metrics)
        # Built for `test` only, and kept out of the module's state (no detector in checkpoints).
        self._generated_evaluators: Dict[str, Metric] = {}

    # --- decomposition (contract 2) ----------------------------------------------------------
    def decompose(self, images: Tensor) -> Decomposition:
        """Background and object layers of G(E(x)); the object mask binarises at 0.5 through
        the evaluation's argmax over (1 − m, m)."""
        x = self._resize(images * 2 - 1, self.resolution)
        if self.chunk_size:
            styles = encode_by_fitting(self, x)
        else:
            styles = self.encoder(x, self.generator_ema.mean_styles())
        layers = self.generator_ema.synthesise(styles)
        size = images.shape[-1]
        bg, fg, m = (self._resize(t.float(), size) for t in layers)
        bg, fg = ((t.clamp(-1, 1) + 1) / 2 for t in (bg, fg))
        m = m.clamp(0, 1)
        return Decomposition(recon=over(fg, m, bg), masks=torch.cat([1 - m, m], dim=1),
                             background=torch.tensor([True, False], device=images.device),
                             layers=torch.stack([bg, fg], dim=1))

    def score_images(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> Dict[str, Tensor]:
        return {"recon_l1": (decomposition.recon - batch["image"]).abs().flatten(1).mean(1),
                "mask_area": (decomposition.masks[:, 1] > 0.5).float().flatten(1).mean(1)}

    def pictures(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> Dict[str, Tensor]:
        """Fig. 3-style samples of the EMA generator (background, foreground, mask, masked
        foreground, composite), shifted and not."""
        return {"samples": samples_figure(self, count=min(8, len(batch["image"])))}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "test" and self.stage == "gan" and self.generated_metrics:
            self._generated_evaluators = self.build_generated_evaluators()
        resuming = self._trainer is not None and self.trainer.ckpt_path is not None
        if stage != "fit" and self.init_checkpoint and not resuming and self.trainer.global_step == 0:
            # the per-chunk protocol evaluates straight from the stage-one weights (never after
            # this trainer has trained the module: that would overwrite what it learned)
            self.load_weights(self.init_checkpoint)
        if stage == "fit" and self.stage == "encoder" and not (self.init_checkpoint or resuming):
            rank_zero_warn("PerturbGAN stage 'encoder' without init_checkpoint: the encoder is "
                           "trained through an untrained generator (give the stage-one checkpoint "
                           "as --model.init_args.init_checkpoint)")

    # --- stage one's evaluation on generated scenes (Tables 1 and 3) ---------------------------
    def build_generated_evaluators(self) -> Dict[str, Metric]:
        h = self.hparams
        evaluators: Dict[str, Metric] = {}
        if "maskrcnn" in self.generated_metrics:
            evaluators["maskrcnn"] = evaluation.DetectedMaskIoU(
                evaluation.coco_mask_rcnn(h.detector_weights), evaluation.coco_category(h.reference_category))
        if "fid" in self.generated_metrics:
            evaluators["fid"] = evaluation.frechet_inception_distance(h.inception_weights)
        return {name: metric.to(self.device) for name, metric in evaluators.items()}

    @torch.no_grad()
    def generated_scenes(self, count: int) -> Tuple[Tensor, Tensor]:
        """Composites in [0, 1] and masks of the EMA generator at its last resolution, from fresh
        codes, unperturbed (no shift, no mixing: those are training devices)."""
        z = torch.randn(count, self.latent_dim, device=self.device)
        layers = self.generator_ema(z, resolution=self.resolution)
        background, foreground = ((t.float().clamp(-1, 1) + 1) / 2 for t in layers[:2])
        mask = layers.mask.float()
        return over(foreground, mask, background), mask

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        if self._generated_evaluators:
            composites, masks = self.generated_scenes(len(batch["image"]))
            if "maskrcnn" in self._generated_evaluators:
                self._generated_evaluators["maskrcnn"].update(composites, masks)
            if "fid" in self._generated_evaluators:
                self._generated_evaluators["fid"].update(batch["image"].float(), real=True)
                self._generated_evaluators["fid"].update(composites, real=False)

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        # <split>/maskrcnn_miou, <split>/maskrcnn_detected, <split>/fid
        self._log_metrics(self.evaluated_split, self._generated_evaluators)

    # --- stage one: the layered GAN (§3.1–3.2) ------------------------------------------------
    def phase(self) -> Phase:
        return self.growing.at(self.batch_step)

    def sample_layers(self, batch_size: int, phase: Phase, ema: bool = False) -> Layers:
        """Layers from fresh codes z ~ N(0, I) (with style mixing, §4)."""
        z = torch.randn(2, batch_size, self.latent_dim, device=self.device)
        generator = self.generator_ema if ema else self.generator
        return generator(z[0], z[1], self.mixing, phase.resolution, phase.alpha)

    def composite(self, layers: Layers, phase: Phase) -> Tuple[Tensor, Tensor]:
        """Eq. 2: the perturbed composite, and the shifted mask."""
        foreground, mask = shift_object(layers.foreground, layers.mask, self.shift * phase.resolution)
        background = layers.background
        if self.jitter is not None:  # Table 1 row d
            background = contrast_jitter(background, *self.jitter)
        return over(foreground, mask, background), mask

    def configure_optimizers(self):
        if self.stage == "encoder":
            return torch.optim.Adam(self.encoder.parameters(), lr=self.encoder_lr,
                                    betas=self.encoder_betas)
        lr = self.growing.learning_rates[0]
        return [torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=self.betas),
                torch.optim.Adam(self.generator.parameters(), lr=lr, betas=self.betas)]

    def configure_callbacks(self):
        return [ExactResume(), NonFiniteLossGuard(), EmulatedBF16Warning()]

    def training_step(self, batch: Dict[str, Tensor], batch_idx: int):
        if self.stage == "encoder":
            return self._encoder_step(batch["image"])
        phase = self.phase()
        for optimizer in self.optimizers():
            for group in optimizer.param_groups:  # the lr of this resolution (§4)
                group["lr"] = phase.lr
        images = batch["image"][: phase.batch_size] * 2 - 1
        real = resize_and_crop(images, phase.resolution, self.crop_scale, self.random_crop)
        terms: Dict[str, Tensor] = {}

        def discriminator_loss() -> Tensor:
            with torch.no_grad():
                fake, _ = self.composite(self.sample_layers(len(real), phase), phase)
            critic = lambda x: self.discriminator(x, phase.resolution, phase.alpha)  # noqa: E731
            real_scores, fake_scores = critic(real), critic(fake)
            penalty = gradient_penalty(critic, real, fake)
            terms["gp"] = penalty.detach()
            terms["wasserstein"] = (real_scores.mean() - fake_scores.mean()).detach()
            return wgan_gp_discriminator_loss(real_scores, fake_scores, penalty, self.gp_weight,
                                              self.drift)

        def generator_loss() -> Tensor:
            layers = self.sample_layers(len(real), phase)  # fresh codes, as the authors' code
            fake, mask = self.composite(layers, phase)
            adversarial = -self.discriminator(fake, phase.resolution, phase.alpha).mean()
            size, binary = size_hinge(mask, self.min_mask), binarisation(mask)
            # generated masks (unshifted): their mean, and the shares that are nearly whole
            # (> 90 % of the image) or nearly empty (< 2 %), the failures of Table 1 (b)
            area = (layers.mask.detach() > 0.5).float().flatten(1).mean(1)
            full, empty = area.gt(0.9).float().mean(), area.lt(0.02).float().mean()
            terms.update(g_adv=adversarial.detach(), size=size.detach(), binary=binary.detach(),
                         mask_mean=layers.mask.detach().mean(), mask_full=full, mask_empty=empty,
                         mask_valid=1 - full - empty)
            return adversarial + self.size_weight * size + self.binary_weight * binary  # Eq. 5

        totals = self.updates.step(self, {"d": discriminator_loss, "g": generator_loss})
        self._update_ema()
        self.log_losses({**terms, **totals})
        self.log_dict({"schedule/resolution": float(phase.resolution), "schedule/alpha": phase.alpha,
                       "schedule/lr": phase.lr, "schedule/batch_size": float(phase.batch_size),
                       "schedule/images": float(phase.images)})
        return None

    @torch.no_grad()
    def _update_ema(self) -> None:
        for ema, live in zip(self.generator_ema.parameters(), self.generator.parameters()):
            ema.lerp_(live, 1 - self.ema_decay)
        for ema, live in zip(self.generator_ema.buffers(), self.generator.buffers()):
            ema.copy_(live)

    # --- stage two: the encoder (§3.3) --------------------------------------------------------
    def autoencoding_loss(self, encoder: StyleEncoder, x: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Eq. 7 for images ``x`` in [-1, 1] at the generator's resolution."""
        layers = self.generator_ema.synthesise(encoder(x, self.generator_ema.mean_styles()))
        x_e = over(layers.foreground, layers.mask, layers.background)
        l1 = (x_e - x).abs().mean()
        perceptual = (self.discriminator.features(x_e) - self.discriminator.features(x)).pow(2).mean()
        return l1 + self.perceptual_weight * perceptual, {"l1": l1.detach(),
                                                         "perceptual": perceptual.detach()}

    def _encoder_step(self, images: Tensor) -> Tensor:
        self.generator_ema.eval()  # no w_avg updates: the decoder is frozen
        loss, terms = self.autoencoding_loss(self.encoder, self._resize(images * 2 - 1, self.resolution))
        self.log_losses({"loss": loss, **terms})
        return loss

    @staticmethod
    def _resize(x: Tensor, size: int) -> Tensor:
        if x.shape[-1] == size:
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                             align_corners=False)
