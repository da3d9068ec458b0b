"""CIS: learning to manipulate individual objects in an image (Yang, Chen, Soatto, CVPR 2020).

A segmentation network Ω splits the image into K soft masks (Eq. 2); a conditional inpainting
network ψ predicts each masked region from its context and the image's binarised edges; Ω is
trained to make that prediction as bad as possible (contextual information separation,
Eq. 5) while ψ is trained to make it good: the max-min of Eq. 12. Per-object VAEs (Eq. 3–4)
encode every segment's appearance and shape, and the perceptual cycle-consistency loss
(Eq. 6–11) asks that perturbing one object's factors leaves the others' where they were.

Training is staged (Sec. 4.2), by a step-indexed ``stage`` schedule:
0. ψ alone, inpainting random rectangles (50k steps in the paper);
1. ψ against Ω: per cycle of ``inpainter_steps + segmenter_steps`` batches, ψ steps on the
   first ones and Ω on the rest (1 : 3 in the authors' code), one batch per update;
2. jointly: Ω's step also minimises the object VAEs' terms (their gradient into Ω scaled by
   ``vae_to_segmenter``) and η·L_PC; ψ keeps its steps.
docs/methods/cis.md lists where the configs follow the authors' code rather than the text.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional

import torch
from torch import Tensor

from objdecomp.methods.base import DecompositionModule
from objdecomp.methods.cis.identity import IdentitySwitches
from objdecomp.methods.cis.losses import (cycle_consistency_loss, inpainter_loss, random_boxes,
                                          segmenter_loss)
from objdecomp.methods.cis.object_vae import ObjectVAE
from objdecomp.methods.cis.pictures import cis_pictures
from objdecomp.nn.inpainting import Inpainter, binary_edge_map
from objdecomp.nn.segmentation import SegmentationNet
from objdecomp.schedules import ScheduleOrNumber, current, log_schedules
from objdecomp.training import (AlternatingUpdates, EmulatedBF16Warning, ExactResume,
                                NonFiniteLossGuard)
from objdecomp.types import Decomposition

PRETRAIN, ADVERSARIAL, JOINT = 0, 1, 2


class CIS(DecompositionModule):
    """Ω, ψ and the object VAEs of CIS, trained by Eq. 12 in the stages of Sec. 4.2.

    Args:
        num_masks: K (Eq. 2; 6 in the text, 5 on Multi-dSprites/Multi-Texture in the code).
        backbone, backbone_width, dilations, segmenter_input_size: Ω
            (:class:`~objdecomp.nn.segmentation.SegmentationNet`).
        inpainter_width: ψ's first width (32 in the code: 13M parameters, Sec. 4.2).
        edge_threshold, edge_normalize, edge_scale: the binarised edge map
            (:func:`~objdecomp.nn.inpainting.binary_edge_map`).
        epsilon: ε of Eq. 5 (30 synthetic, 100 Flying Animals in the code).
        normalizer: ``"unconditioned"`` (the code: error of ψ(∅)) or ``"image"`` (Eq. 5: |x|).
        inpainter_lr, segmenter_lr, vae_lr: Adam learning rates (1e-4 throughout in Sec. 4.2;
            the code trains Ω at 3e-5).
        inpainter_steps, segmenter_steps: the max-min's ratio (1 : 3 in the code).
        stage: 0, 1, 2 or a step-indexed schedule of them (``objdecomp.schedules.Curriculum``
            with the two stage starts, or ``Piecewise``).
        object_vae: build the per-object VAEs (needed by stage 2).
        appearance_latent, shape_latent, vae_width, vae_hidden: the VAEs (Sec. 4.2, [22]).
        beta: β of Eq. 4 on the appearance KL.
        shape_gamma, shape_capacity: the shape KL enters as γ·|KL − C_t| (Burgess et al.'s
            capacity annealing, Sec. 4.2); C_t a number or a schedule.
        cis_weight: γ of Eq. 12; cycle_weight: η of Eq. 12.
        vae_to_segmenter: scale of the VAE terms' gradient into Ω (1: Eq. 12 as written; 0: the
            code's VAE on frozen masks).
        perturbation_scale: σ of ẑ_k ~ N(z_k, σ²I) (Eq. 7: 1).
        identity_switches: also count identity switches (Table 2) when evaluating, on the
            identity-switch sequences (:mod:`~objdecomp.methods.cis.identity`).
    """

    parameters_without_gradient_at_first_step = {
        pattern: "the first batch of the max-min is ψ's (the code's order); Ω's batches follow "
                 "(tests/test_cis.py checks that they reach every parameter of Ω and the VAEs)"
        for pattern in ("segmenter.*", "vae.*")}

    def __init__(self, num_masks: int = 6, backbone: str = "resnet50", backbone_width: int = 64,
                 dilations: List[int] = [2, 4, 6, 8], segmenter_input_size: Optional[int] = None,
                 inpainter_width: int = 32, edge_threshold: float = 0.5,
                 edge_normalize: bool = True, edge_scale: float = 1.0, epsilon: float = 30.0,
                 normalizer: str = "unconditioned", inpainter_lr: float = 1e-4,
                 segmenter_lr: float = 3e-5, vae_lr: float = 1e-4, inpainter_steps: int = 1,
                 segmenter_steps: int = 3, stage: ScheduleOrNumber = ADVERSARIAL,
                 object_vae: bool = False, appearance_latent: int = 5, shape_latent: int = 10,
                 vae_width: int = 32, vae_hidden: int = 256, beta: float = 4.0,
                 shape_gamma: float = 500.0, shape_capacity: ScheduleOrNumber = 0.0,
                 cis_weight: float = 1.0, cycle_weight: float = 0.0,
                 vae_to_segmenter: float = 1.0, perturbation_scale: float = 1.0,
                 identity_switches: bool = False,
                 image_size: int = 64, channels: int = 3, max_objects: int = 4,
                 num_classes: int = 0, num_background: int = 1,
                 init_checkpoint: Optional[str] = None):
        super().__init__(image_size, channels, max_objects, num_classes, num_background,
                         init_checkpoint)
        if normalizer not in ("unconditioned", "image"):
            raise ValueError(f"normalizer must be 'unconditioned' or 'image', got {normalizer!r}")
        if min(inpainter_steps, segmenter_steps) < 1:
            raise ValueError("inpainter_steps and segmenter_steps must be at least 1")
        # Schedules stay out of the checkpoint (weights_only loading); they come from the config.
        self.save_hyperparameters(ignore=["stage", "shape_capacity"])
        self.stage, self.shape_capacity = stage, shape_capacity
        self.automatic_optimization = False  # the max-min of Eq. 12
        self.segmenter = SegmentationNet(channels, num_masks, backbone, backbone_width, dilations,
                                         segmenter_input_size)
        self.inpainter = Inpainter(channels, inpainter_width)
        self.vae = ObjectVAE(num_masks, image_size, channels, appearance_latent, shape_latent,
                             vae_width, vae_hidden) if object_vae else None
        self.num_masks = num_masks
        if identity_switches:  # Table 2, logged as <split>/identity_switches[_rate, _frames]
            self.val_metrics["identity_switches"] = IdentitySwitches(num_masks)
            self.test_metrics["identity_switches"] = IdentitySwitches(num_masks)

    # --- decomposition (contract 2) ------------------------------------------------------------
    def decompose(self, images: Tensor) -> Decomposition:
        """Ω's soft masks; with the object VAEs, their decoded segments and fused image.

        The background is the component with the largest mass over the batch (the authors'
        rule when they hand segments to the VAEs); the metrics of Table 1 do not read it.
        """
        masks = self.segmenter.masks(images).float()
        background = torch.zeros(self.num_masks, dtype=torch.bool, device=images.device)
        background[masks.sum((0, 2, 3)).argmax()] = True
        if self.vae is None:
            return Decomposition(recon=images, masks=masks, background=background,
                                 layers=images[:, None].expand(-1, self.num_masks, -1, -1, -1))
        mean, _ = self.vae.encode(images, masks)
        appearance, _, recon = self.vae.decode(mean)
        return Decomposition(recon=recon.float(), masks=masks, background=background,
                             layers=appearance.float())

    def pictures(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> Dict[str, Tensor]:
        return cis_pictures(self, batch["image"], decomposition)

    # --- the game ------------------------------------------------------------------------------
    def current_stage(self) -> int:
        stage = int(current(self, self.stage))
        if stage not in (PRETRAIN, ADVERSARIAL, JOINT):
            raise ValueError(f"stage must be 0, 1 or 2, got {stage}")
        if stage == JOINT and self.vae is None:
            raise ValueError("stage 2 (joint training) needs object_vae: true")
        return stage

    def player(self, batch: int) -> str:
        """Who updates on this batch in stages 1–2: ψ on the first ``inpainter_steps`` batches
        of each cycle, Ω on the next ``segmenter_steps`` (one batch per update, as the code)."""
        cycle = self.hparams.inpainter_steps + self.hparams.segmenter_steps
        return "inpainter" if batch % cycle < self.hparams.inpainter_steps else "segmenter"

    def edges(self, images: Tensor) -> Tensor:
        h = self.hparams
        return binary_edge_map(images, h.edge_threshold, h.edge_normalize, h.edge_scale)

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        images = batch["image"]
        stage = self.current_stage()
        inpainter_opt, segmenter_opt = self.optimizers()
        edges = self.edges(images)
        terms: Dict[str, Tensor] = {}
        if stage == PRETRAIN or self.player(self.batch_step) == "inpainter":
            if stage == PRETRAIN:
                masks = random_boxes(images)
            else:
                with torch.no_grad():
                    masks = self.segmenter.masks(images)

            def loss() -> Tensor:
                return inpainter_loss(self.inpainter(images, masks, edges), images, masks)

            terms["inpainter"] = AlternatingUpdates.update(self, inpainter_opt, loss)
        else:
            def loss() -> Tensor:
                return self.segmenter_objective(images, edges, stage, terms)

            terms["segmenter"] = AlternatingUpdates.update(self, segmenter_opt, loss)
        log_schedules(self, {"stage": self.stage, "shape_capacity": self.shape_capacity})
        self.log_losses(terms)

    def segmenter_objective(self, images: Tensor, edges: Tensor, stage: int,
                            terms: Dict[str, Tensor]) -> Tensor:
        """Ω's (and in stage 2 the VAEs') side of Eq. 12; logs its terms into ``terms``."""
        h = self.hparams
        masks = self.segmenter.masks(images)
        edge_features = self.inpainter.encode_edges(edges)
        inpainted = self.inpainter(images, masks, edges, edge_features)
        unconditioned = None
        if h.normalizer == "unconditioned":
            with torch.no_grad():  # ψ(∅) sees no mask: nothing of Ω in it
                unconditioned = self.inpainter.unconditioned(images, edges, edge_features)
        cis = segmenter_loss(inpainted, images, masks, h.epsilon, unconditioned)
        terms["cis"] = cis.detach()
        total = h.cis_weight * cis
        if stage == JOINT:
            total = total + self.vae_objective(images, masks, terms)
        return total

    def vae_objective(self, images: Tensor, masks: Tensor, terms: Dict[str, Tensor]) -> Tensor:
        """Eq. 3–4 summed over the K segments (and the fused image), plus η·L_PC (Eq. 11)."""
        h = self.hparams
        scale = h.vae_to_segmenter  # forward value unchanged; gradient into Ω scaled
        vae_masks = scale * masks + (1 - scale) * masks.detach() if scale != 1 else masks
        out = self.vae(images, vae_masks)
        capacity = current(self, self.shape_capacity)
        kl_a, kl_s = out["kl_appearance"].sum(), out["kl_shape"].sum()
        loss = (out["appearance_error"] + out["shape_error"] + out["fusion_error"]
                + h.beta * kl_a + h.shape_gamma * (kl_s - capacity).abs())
        terms.update({name: out[name].detach() for name in
                      ("appearance_error", "shape_error", "fusion_error")})
        terms.update(kl_appearance=kl_a.detach(), kl_shape=kl_s.detach())
        if h.cycle_weight > 0:
            cycle = self.cycle_loss(images, out["mean"])
            terms["cycle"] = cycle.detach()
            loss = loss + h.cycle_weight * cycle
        return loss

    def cycle_loss(self, images: Tensor, z: Tensor, k: Optional[Tensor] = None) -> Tensor:
        """L_PC (Eq. 6–11) from the posterior means ``z`` ``[B, K, D]`` of the input's segments.

        The targets (z_l and ẑ_k) are held fixed: the loss moves the synthesised image's
        segmentation and encoding towards them, not them towards it (as the code, which
        stops gradients into its targets).
        """
        b = z.shape[0]
        if k is None:
            k = torch.randint(self.num_masks, (b,), device=z.device)  # Eq. 6
        rows = torch.arange(b, device=z.device)
        z = z.detach()
        z_perturbed = z[rows, k] + self.hparams.perturbation_scale * torch.randn_like(z[rows, k])
        z_new = z.clone()
        z_new[rows, k] = z_perturbed  # Eq. 7
        _, _, synthesised = self.vae.decode(z_new)  # Eq. 8
        masks = self.segmenter.masks(synthesised)  # Eq. 9
        z_cycle, _ = self.vae.encode(synthesised, masks)  # Eq. 10
        return cycle_consistency_loss(z, z_perturbed, z_cycle, k)

    def configure_optimizers(self):
        h = self.hparams
        inpainter = torch.optim.Adam(self.inpainter.parameters(), lr=h.inpainter_lr)
        groups = [{"params": self.segmenter.parameters(), "lr": h.segmenter_lr}]
        if self.vae is not None:
            groups.append({"params": self.vae.parameters(), "lr": h.vae_lr})
        return [inpainter, torch.optim.Adam(groups)]  # ψ, then Ω (and the VAEs)

    def configure_callbacks(self):
        return [ExactResume(), NonFiniteLossGuard(), EmulatedBF16Warning()]
