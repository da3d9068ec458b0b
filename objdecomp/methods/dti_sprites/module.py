"""DTI-Sprites: unsupervised layered image decomposition into object prototypes
(Monnier, Vincent, Ponce, Aubry, ICCV 2021).

An image is L object layers over a background, each layer a transformed sprite (Eq. 3-4)
composited with a predicted occlusion matrix (Eq. 2). Training minimises Eq. 5: per image,
the best sprite per layer (greedy Algorithm 1 or exhaustive search, :mod:`.selection`) and the
squared error of its composite. λ only steers the selection (it is constant given the choice).

Schedules of appendix C.2-C.3, all epoch-indexed :mod:`objdecomp.schedules` objects logged
under ``schedule/``: the curriculum of transformation modules (``@E`` in the sequence strings),
sprites frozen for the first epochs, learning-rate drops at ``milestones``; and reassignment of
rarely used sprites every ``reassign_every`` steps. DTI's ARI-FG protocol (predicted background
reassigned to the closest object layer) is the metric :class:`~objdecomp.metrics.ARIFGDTI`,
logged as ``ari_fg_dti``; its evaluation labels are :func:`~objdecomp.metrics.functional.frontmost_labels`.

Where this follows the authors' code rather than the paper's text, and the options that give
the text's version, are listed in docs/methods/dti_sprites.md. Deliberate deviation: sprite
usage for reassignment is counted over all layers (the authors' code samples one layer).
"""

from __future__ import annotations

from typing import Dict, List, Literal, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from objdecomp.compositing import composite, ownership
from objdecomp.methods.base import DecompositionModule
from objdecomp.metrics.functional import frontmost_labels
from objdecomp.methods.dti_sprites.networks import DTISpritesNet, Prediction
from objdecomp.methods.dti_sprites.pictures import decomposition_figure, sprite_sheet
from objdecomp.methods.dti_sprites.selection import exhaustive_selection, greedy_selection
from objdecomp.schedules import Piecewise, StepDecay, as_lr_lambda, current, log_schedules
from objdecomp.training import EmulatedBF16Warning, ExactResume, NonFiniteLossGuard
from objdecomp.types import Decomposition

REASSIGN_NOISE = 1e-4  # scale of the noise added to a reassigned sprite (authors' code)
LR_DROP = 0.1  # C.2: learning rates are multiplied by 0.1 at each milestone


class DTISprites(DecompositionModule):
    """DTI-Sprites (Sec. 3, appendix C). Dataset facts come from the datamodule.

    Args:
        num_sprites: K (default: one per object category, ``num_classes − 1``; §4.1).
        num_layers: L (default: ``max_objects``, §4.1).
        num_backgrounds: K' background prototypes (0: a fixed black background).
        sprite_size: sprite side in pixels (default: the image size).
        mask_std: std in pixels of the Gaussian mask initialisation (C.2).
        layer_transforms, sprite_transforms, background_transforms: T^lay, T^spr, T^bkg as
            strings such as ``"col-pos"`` or ``"col-proj@100-tps@350"`` (Table 6; ``@E`` = on
            from epoch E, the curriculum of C.2).
        position: ``pos``'s parameterisation: ``"half_canvas"`` (the authors' code: a sprite starts
            over the central half of the canvas) or ``"native_size"`` (starts at its size in pixels).
        empty_sprite: add the empty sprite (Sec. 3.1), penalised by ``empty_penalty`` (λ = 1e-4)
            in the greedy selection (the authors' code); ``penalize_exhaustive`` adds λ to the
            exhaustive search too (Eq. 5 as written).
        occlusion: ``"learned"`` (Sec. 3.2) or ``"fixed"`` (later layers in front).
        selection: ``"greedy"`` (Algorithm 1, ``greedy_iterations`` = T) or ``"exhaustive"``.
        evaluation_labels: how evaluation assigns pixels to layers. ``"frontmost_mask"`` (the
            authors' code): sprites selected with the predicted occlusion, a pixel labelled by
            the frontmost layer whose mask exceeds 0.5 under the binarised occlusion (one-hot
            masks). ``"visible_weight"`` (Sec. 3.2's "at inference"): the occlusion binarised for
            selection and compositing, a pixel owned by its largest visible weight.
        mask_noise: amplitude of the uniform mask noise of C.3 (0.4; 0 disables it).
        freeze_sprites_epochs: epochs with frozen sprites and no empty sprite (C.2).
        reassign_every: steps between reassignment checks (0: never); a sprite whose share of
            the layers is under ``reassign_threshold / K`` is reassigned (C.2).
        reassign_share: with the empty sprite, ``"most_used"`` (the authors' code) takes a
            sprite's count relative to the most used sprite's, ``"layers"`` (C.2's text) over
            all layers; without it both are the share of the layers.
        background_init: constant initial background, or None for the mean of 100 training
            images (C.2).
        encoder: ``"auto"`` (Sec. 3.3: mini ResNet-32 under 65×65, ResNet-18 above),
            ``"resnet<6n+2>"`` or ``"resnet18"``; ``encoder_pool``: adaptive pooling side
            (default: 1, or 4 / 2 beyond 3 objects); ``encoder_width``: mini-ResNet width.
        lr, weight_decay: Adam (weight decay on the networks only, C.2).
        sprite_lr: learning rate of the sprites and backgrounds (default: ``lr``, as in C.2).
        milestones, lr_drop_sprites: epochs where learning rates are multiplied by 0.1; the
            sprites' and backgrounds' rate drops too only if ``lr_drop_sprites``.
        channels_last: run the encoder in channels-last memory format (faster convolutions on
            CPU and on tensor-core GPUs; the results are the same).
    """

    evaluation_scores = ("recon_mse",)
    parameters_without_gradient_at_first_step = {
        "net.sprites.*": "a sprite that no layer of the batch selects gets no gradient (Eq. 5 "
                         "keeps the best sprite per layer), nor do frozen sprites (C.2)",
        "net.backgrounds": "a background prototype that no image selects gets no gradient",
    }

    def __init__(self, image_size: int = 64, channels: int = 3, max_objects: int = 1,
                 num_classes: int = 0, num_background: int = 1, init_checkpoint: Optional[str] = None,
                 num_sprites: Optional[int] = None, num_layers: Optional[int] = None,
                 num_backgrounds: int = 1, sprite_size: Optional[int] = None, mask_std: float = 5.0,
                 layer_transforms: str = "", sprite_transforms: str = "col-proj",
                 background_transforms: str = "col-proj",
                 position: Literal["half_canvas", "native_size"] = "half_canvas",
                 empty_sprite: bool = True, empty_penalty: float = 1e-4,
                 penalize_exhaustive: bool = False, occlusion: Literal["learned", "fixed"] = "learned",
                 selection: Literal["greedy", "exhaustive"] = "greedy", greedy_iterations: int = 1,
                 evaluation_labels: Literal["frontmost_mask", "visible_weight"] = "frontmost_mask",
                 mask_noise: float = 0.4, freeze_sprites_epochs: int = 0, reassign_every: int = 0,
                 reassign_threshold: float = 0.2,
                 reassign_share: Literal["most_used", "layers"] = "most_used",
                 background_init: Optional[float] = None,
                 encoder: str = "auto", encoder_pool: Optional[int] = None, encoder_width: int = 16,
                 lr: float = 1e-3, sprite_lr: Optional[float] = None, weight_decay: float = 1e-6,
                 milestones: Optional[List[int]] = None,
                 lr_drop_sprites: bool = True, channels_last: bool = True):
        super().__init__(image_size, channels, max_objects, num_classes, num_background, init_checkpoint)
        self.save_hyperparameters()
        num_sprites = num_sprites or num_classes - 1
        if num_sprites < 1:
            raise ValueError("num_sprites must be set for a dataset without object classes")
        if encoder == "auto":
            encoder = "resnet32" if image_size < 65 else "resnet18"
        if encoder_pool is None:
            encoder_pool = 1 if max_objects <= 3 else (2 if encoder == "resnet18" else 4)
        self.net = DTISpritesNet(channels, image_size, num_sprites, num_layers or max_objects,
                                 num_backgrounds, sprite_size or image_size, mask_std,
                                 layer_transforms, sprite_transforms, background_transforms,
                                 occlusion == "learned", encoder, encoder_pool, encoder_width,
                                 position=position)
        if background_init is not None:
            torch.nn.init.constant_(self.net.backgrounds, background_init)
        # 1 while the sprites are frozen (C.2); the buffer keeps the state in checkpoints.
        self.sprite_freeze = Piecewise({0: 1.0, freeze_sprites_epochs: 0.0}, unit="epoch")
        self.register_buffer("frozen", torch.tensor(freeze_sprites_epochs > 0))
        # Layers holding each sprite, then the empty sprite, since the last reassignment check.
        self.register_buffer("usage", torch.zeros(num_sprites + 1, dtype=torch.long))
        if channels_last:
            self.net.encoder.to(memory_format=torch.channels_last)

    # --- the model ------------------------------------------------------------------------
    def infer(self, images: Tensor, noise: Optional[Tensor] = None) -> Tuple[Prediction, Tensor, Tensor]:
        """Heads, occlusion and selected sprites. The occlusion is binarised at 0.5 outside
        training only with ``evaluation_labels="visible_weight"`` (see the class docstring).

        Returns the prediction, the occlusion ``[B, L+1, L+1]`` and ``ids`` ``[B, L+1]``.
        """
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        pred = self.net.predict(images)
        binarise = not self.training and self.hparams.evaluation_labels == "visible_weight"
        occlusion = (pred.occlusion > 0.5).float() if binarise else pred.occlusion
        frozen = bool(self.frozen)
        # Only the encoder follows the precision setting (bf16-mixed): products of many alphas
        # and the selection's small error differences need float32.
        with torch.no_grad(), torch.autocast(images.device.type, enabled=False):
            colors, alphas = self.net.render(pred, None, noise, frozen)
            backgrounds = self.net.render_backgrounds(pred)
            empty = self.hparams.empty_sprite and not frozen
            penalty = self.hparams.empty_penalty if empty else 0.0
            args = (images.float(), colors, alphas, backgrounds, occlusion)
            if self.hparams.selection == "exhaustive":
                penalty = penalty if self.hparams.penalize_exhaustive else 0.0
                ids = exhaustive_selection(*args, empty=empty, penalty=penalty)
            else:
                ids = greedy_selection(*args, self.hparams.greedy_iterations, empty, penalty)
        return pred, occlusion, ids

    def layers(self, pred: Prediction, ids: Tensor, noise: Optional[Tensor] = None
               ) -> Tuple[Tensor, Tensor]:
        """Colours ``[B, L+1, C, H, W]`` and alphas ``[B, L+1, 1, H, W]`` of the selected layers,
        background first (rendered again with gradients, for the selected sprites only)."""
        colors, alphas = self.net.render(pred, ids[:, 1:], noise, bool(self.frozen))
        backgrounds = self.net.render_backgrounds(pred)
        rows = torch.arange(len(ids), device=ids.device)
        background = backgrounds[rows, ids[:, 0].clamp(max=backgrounds.shape[1] - 1)]  # K' = 0: black
        colors = torch.cat([background[:, None], colors[:, :, 0]], 1)
        alphas = torch.cat([torch.ones_like(alphas[:, :1, 0]), alphas[:, :, 0]], 1)
        return colors, alphas

    def forward(self, images: Tensor, noise: Optional[Tensor] = None):
        """Composite of the selected layers: ``(recon, weights, colors, ids)``."""
        recon, weights, colors, _, ids, _ = self._composed(images, noise)
        return recon, weights, colors, ids

    def _composed(self, images: Tensor, noise: Optional[Tensor] = None):
        """``(recon, weights, colors, alphas, ids, occlusion)`` of the selected layers."""
        pred, occlusion, ids = self.infer(images, noise)
        with torch.autocast(images.device.type, enabled=False):
            colors, alphas = self.layers(pred, ids, noise)
            recon, weights = composite(colors, alphas, occlusion)
        return recon, weights, colors, alphas, ids, occlusion

    def decompose(self, images: Tensor) -> Decomposition:
        recon, weights, colors, alphas, ids, occlusion = self._composed(images)
        if self.hparams.evaluation_labels == "frontmost_mask":
            labels = frontmost_labels(alphas[:, 1:, 0], occlusion[:, 1:, 1:])
            masks = F.one_hot(labels, ids.shape[1]).permute(0, 3, 1, 2).to(weights.dtype)
        else:
            masks = ownership(weights)
        k = self.net.num_sprites
        objects = ids[:, 1:]
        classes = torch.cat([torch.zeros_like(ids[:, :1]), torch.where(objects < k, objects + 1, 0)], 1)
        background = torch.zeros(ids.shape[1], dtype=torch.bool, device=ids.device)
        background[0] = True
        return Decomposition(recon.clamp(0, 1), masks, background,
                             colors.clamp(0, 1), classes, (objects < k).sum(1))

    def score_images(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> Dict[str, Tensor]:
        """The reconstruction error per image (the paper filters outlier runs by it, Sec. 4.1)."""
        error = (decomposition.recon - batch["image"].to(decomposition.recon)).square()
        return {"recon_mse": error.flatten(1).mean(1)}

    def pictures(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> Dict[str, Tensor]:
        return {"sprites": sprite_sheet(self.net),
                "figure": decomposition_figure(batch["image"], decomposition)}

    # --- training -------------------------------------------------------------------------
    def training_step(self, batch: Dict[str, Tensor], batch_idx: int) -> Tensor:
        images = batch["image"]
        amplitude = self.hparams.mask_noise
        noise = self.net.mask_noise(amplitude, images.device) if amplitude else None
        recon, _, _, ids = self(images, noise)
        loss = F.mse_loss(recon, images.float())
        nonempty = (ids[:, 1:] < self.net.num_sprites).float().sum(1).mean()
        self.log_losses({"loss": loss})
        self.log_dict({"train/objective": loss.detach() + self.hparams.empty_penalty * nonempty,
                       "train/nonempty_layers": nonempty})
        self.usage += torch.bincount(ids[:, 1:].flatten(), minlength=self.net.num_sprites + 1)
        return loss

    def configure_optimizers(self):
        prototypes = [self.net.sprites.appearance, self.net.sprites.masks, self.net.backgrounds]
        ids = {id(p) for p in prototypes}
        networks = [p for p in self.parameters() if id(p) not in ids]
        sprite_lr = self.hparams.sprite_lr or self.hparams.lr
        optimizer = torch.optim.Adam([{"params": prototypes, "weight_decay": 0.0, "lr": sprite_lr},
                                      {"params": networks, "weight_decay": self.hparams.weight_decay}],
                                     lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, [as_lr_lambda(decay) for decay in self.learning_rate_decays()])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def learning_rate_decays(self) -> List[StepDecay]:
        """Factors of the sprites' and the networks' learning rates, by epoch (C.2)."""
        milestones = self.hparams.milestones or []
        sprite_milestones = milestones if self.hparams.lr_drop_sprites else []
        return [StepDecay(sprite_milestones, LR_DROP, unit="epoch"),
                StepDecay(milestones, LR_DROP, unit="epoch")]

    def configure_callbacks(self):
        return [ExactResume(), NonFiniteLossGuard(), EmulatedBF16Warning()]

    def on_fit_start(self) -> None:
        # Only from scratch: Lightning calls this hook after restoring a checkpoint's weights
        # but before its counters (global_step is still 0 when resuming).
        from_scratch = self.trainer.ckpt_path is None and not self.init_checkpoint
        if self.hparams.background_init is None and from_scratch and self.net.num_backgrounds:
            self._init_backgrounds_from_data()

    def _init_backgrounds_from_data(self, count: int = 100) -> None:
        """C.2: backgrounds start as the mean of training images (here 100 evenly spaced ones)."""
        datamodule = self.trainer.datamodule
        batch = datamodule.sample_batch("train", count, spread=True) if datamodule is not None else None
        if batch is None:
            return
        with torch.no_grad():
            self.net.backgrounds.copy_(batch["image"].mean(0).to(self.net.backgrounds))

    def on_train_epoch_start(self) -> None:
        """Epoch-indexed schedules of C.2: curriculum, frozen sprites; logged with the lr."""
        for sequence in self.net.sequences:
            sequence.set_epoch(self.current_epoch)
        self.frozen.fill_(current(self, self.sprite_freeze) > 0)
        groups = self.optimizers().param_groups
        curricula = {f"{name}_modules": sequence.curriculum for name, sequence in
                     zip(("layer", "sprite", "background"), self.net.sequences)}
        log_schedules(self, {**curricula, "sprites_frozen": self.sprite_freeze,
                             "lr_sprites": groups[0]["lr"], "lr_networks": groups[1]["lr"]})

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        every = self.hparams.reassign_every
        if every and self.global_step % every == 0:
            if not bool(self.frozen):
                self.log("schedule/reassigned", float(len(self.reassign_rare_sprites())))
            self.usage.zero_()

    @torch.no_grad()
    def reassign_rare_sprites(self) -> List[int]:
        """C.2: sprites used for less than ``threshold / K`` of the layers become noisy copies of
        the most used one (appearance, mask, sprite-specific heads, and the masks' Adam moments).

        A sprite's share is its count over all layers' (``reassign_share``: with the empty
        sprite the authors' code divides by the most used sprite's count instead).
        """
        counts = self.usage.float()
        if self._trainer is not None and self.trainer.world_size > 1:
            # Every rank must take the same decision and draw the same noise, or replicas diverge.
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        usage = counts[:-1]
        if usage.max() == 0:  # every layer empty since the last check
            return []
        most_used = self.hparams.empty_sprite and self.hparams.reassign_share == "most_used"
        share = usage / (usage.max() if most_used else counts.sum())
        rare = (share < self.hparams.reassign_threshold / self.net.num_sprites).nonzero().flatten().tolist()
        source = int(usage.argmax())
        generator = torch.Generator().manual_seed(self.global_step)
        optimizer = self.optimizers().optimizer if self._trainer is not None else None
        for target in rare + ([source] if rare else []):  # the source gets fresh noise too
            self.net.reassign(target, source, REASSIGN_NOISE, generator)
            state = optimizer.state.get(self.net.sprites.masks, {}) if optimizer is not None else {}
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][target] = state[key][source]
        return rare
