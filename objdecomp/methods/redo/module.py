"""ReDO: unsupervised object segmentation by redrawing (Chen, Artières, Denoyer, NeurIPS 2019).

A mask network F splits an image into n regions; a region is redrawn by its generator G_k
from a fresh code z_k while the other regions keep the input's pixels; a discriminator D
judges the result, and δ must recover z_k, so region k cannot be empty (§3.3). Training
alternates a G/F/δ step and a D step (Algorithm 1) through manual optimisation. The
decomposition is F's n soft masks; which one is the object is decided by the evaluation's
best permutation (§5.2).

The defaults are what the authors' code runs (and the paper tables' configs use): every
region redrawn each iteration, δ fed the fully generated image, conditional instance norm in
G_k, D's step redrawing with the G step's codes against real images drawn apart, the
spectrally normalised layers left at PyTorch's initialisation. The paper text's version
(Algorithm 1, §4) is ``redraw="one"``, ``cond_norm="batch"``,
``fresh_discriminator_codes=True``, ``sn_init="orthogonal"``; docs/methods/redo.md lists
every place where the code and the text differ.
"""

from __future__ import annotations

from typing import Dict, Iterator, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from objdecomp.methods.base import DecompositionModule
from objdecomp.methods.redo.networks import ReDONetworks
from objdecomp.methods.redo.pictures import PICTURE_IMAGES, redrawing_figure
from objdecomp.methods.redo.real_batches import real_batch_loader
from objdecomp.nn.gan import hinge_d_loss, hinge_g_loss
from objdecomp.training import (AlternatingUpdates, EmulatedBF16Warning, ExactResume,
                                NonFiniteLossGuard, Player)
from objdecomp.training.allocator import ReuseFreedMemory
from objdecomp.types import Decomposition


class ReDO(DecompositionModule):
    """The ReDO GAN (§3–4). Defaults are the authors' code's (docs/methods/redo.md).

    Args:
        num_regions: n, the number of regions (2; 3 for colored-2-MNIST, §5.1).
        z_dim: size of each z_k (32; 16 for MNIST, §4).
        lambda_z: weight of the information-conservation term; the squared error is
            averaged over z's dimensions as in the code, whose value is 5.
        lr: Adam learning rate of G, D and δ (1e-4, §4).
        mask_lr: learning rate of F (1e-5, §4).
        mask_weight_decay: L2 weight decay of F (1e-4 in the code; the paper is silent).
        betas: Adam betas ((0, 0.9), §4).
        discriminator_lr: Adam learning rate of D (default: ``lr``, as in §4; SAGAN's
            two-timescale rule would be 4x ``lr``).
        discriminator_steps: D updates per G/F/δ update (1 in Algorithm 1 and the code), each
            redrawing the same batch, with the same real images.
        mask_width, mask_res_blocks, temperature: F's width at 1/4 resolution, residual
            blocks, softmax temperature (64, 3, 1 in the code).
        mask_downsampling: stride-2 steps in F's encoder (2 in the code; see MaskNetwork).
        gen_width, disc_width, z_net_width: base widths of G_k, D and δ (the code's ``nfX``,
            ``nfD``, ``nfZ``: 64 each by default; its README trains Flowers with ``nfX`` 32).
        gen_attention, disc_attention: SAGAN self-attention in G_k and D (§4: both).
        cond_norm: ``"instance"`` (the code) or ``"batch"`` (§4's text) conditional
            normalisation in G_k.
        init_gain: gain of the orthogonal initialisation (0.8 in the code).
        sn_init: initialisation of the spectrally normalised layers: ``"default"``
            (PyTorch's, what the authors' GPU runs had) or ``"orthogonal"`` (§4); see
            :class:`~objdecomp.methods.redo.networks.ReDONetworks`.
        redraw: ``"all"`` regions each iteration, D judging n·B fakes and δ reading the fully
            generated image (the code), or ``"one"`` region i ~ U(n) per image (Algorithm 1).
        fresh_discriminator_codes: D's step redraws with new regions and codes (Algorithm 1,
            lines 12–13) instead of the G step's (the code).
        real_batch: D's real images: ``"separate"``, a batch drawn apart from the redrawn one
            (Algorithm 1 and the code; :mod:`~objdecomp.methods.redo.real_batches`), or
            ``"same"``, the redrawn batch itself (no second batch to load; each hinge term's
            expectation is unchanged, only their covariance differs).
        channels_last: run every network in channels-last memory format (D's forward 1.8x
            faster on this CPU, and the layout tensor-core GPUs prefer; same results).
    """

    parameters_without_gradient_at_first_step = {
        f"*.{name}.*": "SAGAN self-attention adds gamma * attention with gamma = 0 at first, "
                       "so no gradient reaches its inner weights before gamma moves"
        for name in ("query", "key", "value", "out")}
    def __init__(self, num_regions: int = 2, z_dim: int = 32, lambda_z: float = 5.0,
                 lr: float = 1e-4, mask_lr: float = 1e-5, mask_weight_decay: float = 1e-4,
                 betas: Tuple[float, float] = (0.0, 0.9), discriminator_lr: Optional[float] = None,
                 discriminator_steps: int = 1, mask_width: int = 64,
                 mask_res_blocks: int = 3, temperature: float = 1.0, mask_downsampling: int = 2,
                 gen_width: int = 64, disc_width: int = 64, z_net_width: int = 64,
                 gen_attention: bool = True, disc_attention: bool = True,
                 cond_norm: str = "instance", init_gain: float = 0.8, sn_init: str = "default",
                 redraw: str = "all", fresh_discriminator_codes: bool = False,
                 real_batch: str = "separate",
                 image_size: int = 128, channels: int = 3,
                 max_objects: int = 1, num_classes: int = 0, num_background: int = 1,
                 init_checkpoint: Optional[str] = None, channels_last: bool = True):
        super().__init__(image_size, channels, max_objects, num_classes, num_background,
                         init_checkpoint)
        if redraw not in ("one", "all"):
            raise ValueError(f"redraw must be 'one' (Algorithm 1) or 'all' (the code), got {redraw!r}")
        if real_batch not in ("separate", "same"):
            raise ValueError(f"real_batch must be 'separate' or 'same', got {real_batch!r}")
        if discriminator_steps < 1:
            raise ValueError(f"discriminator_steps must be at least 1, got {discriminator_steps}")
        self.save_hyperparameters()
        self.automatic_optimization = False  # alternating G/D updates (Algorithm 1)
        self.num_regions, self.z_dim, self.lambda_z, self.redraw_mode = (
            num_regions, z_dim, lambda_z, redraw)
        self.real_batch, self.fresh_discriminator_codes = real_batch, fresh_discriminator_codes
        self.lr, self.mask_lr, self.mask_weight_decay, self.betas = (
            lr, mask_lr, mask_weight_decay, tuple(float(b) for b in betas))
        self.discriminator_lr = lr if discriminator_lr is None else discriminator_lr
        self.discriminator_steps = discriminator_steps
        # Algorithm 1: one G/F/δ update, then D's; each update counts as an optimizer step, so
        # global_step advances by 1 + discriminator_steps per batch.
        self.updates = AlternatingUpdates([Player("g"), Player("d", steps=discriminator_steps)])
        self._network_args = dict(
            image_size=image_size, channels=channels, num_regions=num_regions, z_dim=z_dim,
            mask_width=mask_width, mask_res_blocks=mask_res_blocks, temperature=temperature,
            mask_downsampling=mask_downsampling,
            gen_width=gen_width, disc_width=disc_width, z_net_width=z_net_width,
            gen_attention=gen_attention, disc_attention=disc_attention, cond_norm=cond_norm,
            init_gain=init_gain, sn_init=sn_init)
        self.nets = ReDONetworks(**self._network_args)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.nets.to(memory_format=self.memory_format)
        self._real_batches: Optional[Iterator[Dict[str, Tensor]]] = None  # real_batch="separate"

    # --- decomposition (contract 2) ----------------------------------------------------------
    def decompose(self, images: Tensor) -> Decomposition:
        """F's soft masks; every region's appearance is the input itself (nothing is redrawn).

        The last region is flagged as background (the paper's "object n"), but which region
        is the object is left to the evaluation's best permutation (§5.2).
        """
        masks = self.nets.mask(self._network_input(images)).float()
        background = torch.zeros(self.num_regions, dtype=torch.bool, device=images.device)
        background[-1] = True
        layers = images[:, None].expand(-1, self.num_regions, -1, -1, -1)
        return Decomposition(recon=images, masks=masks, background=background, layers=layers)

    def pictures(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> Dict[str, Tensor]:
        """Fig. 2-style grid on the first images of the batch (callbacks/pictures.py saves it)."""
        first = {k: v[:PICTURE_IMAGES] for k, v in batch.items()}
        return {"redrawing": redrawing_figure(self.nets, first, self.num_background)}

    # --- training (Algorithm 1) ------------------------------------------------------------------
    def configure_optimizers(self):
        nets = self.nets
        # Fused: one pass over each parameter per step (the default CPU Adam makes several).
        adam = dict(betas=self.betas, fused=self.device.type in ("cpu", "cuda"))
        generator_step = torch.optim.Adam([  # Adam is per-parameter: groups = three Adams
            {"params": nets.mask.parameters(), "lr": self.mask_lr,
             "weight_decay": self.mask_weight_decay},
            {"params": nets.generators.parameters(), "lr": self.lr},
            {"params": nets.z_net.parameters(), "lr": self.lr},
        ], **adam)
        discriminator_step = torch.optim.Adam(nets.discriminator.parameters(),
                                              lr=self.discriminator_lr, **adam)
        return [generator_step, discriminator_step]  # the order of the players

    def configure_callbacks(self):
        return [ExactResume(), NonFiniteLossGuard(), EmulatedBF16Warning(), ReuseFreedMemory()]

    def on_train_start(self) -> None:
        if self.real_batch == "separate":
            # From the next batch on: after a resume, the batches the checkpoint had processed
            # (a checkpoint written at a batch's end counts it as processed, not yet completed).
            start = self.trainer.fit_loop.epoch_loop.batch_progress.total.processed
            loader = real_batch_loader(self.trainer.train_dataloader, start=start,
                                       rank=self.global_rank, world_size=self.trainer.world_size)
            self._real_batches = iter(loader)

    def on_train_end(self) -> None:
        self._real_batches = None  # ends the stream's loader workers

    def training_step(self, batch: Dict[str, Tensor], batch_idx: int) -> None:
        images = self._network_input(batch["image"])
        real = images if self.real_batch == "same" else self._next_real_images()
        codes = self._sample(images.shape[0])
        terms: Dict[str, Tensor] = {}

        def generator_loss() -> Tensor:
            adversarial, z_error = self._generator_terms(images, *codes)
            terms["g_adv"], terms["z_rec"] = adversarial.detach(), z_error.detach()
            return adversarial + self.lambda_z * z_error

        def discriminator_loss() -> Tensor:
            region, z = self._sample(len(images)) if self.fresh_discriminator_codes else codes
            return self._discriminator_loss(images, real, region, z)

        totals = self.updates.step(self, {"g": generator_loss, "d": discriminator_loss})
        self.log_losses({**terms, **totals})

    def _network_input(self, images: Tensor) -> Tensor:
        """Images in [0, 1] -> [-1, 1] (the generators end with tanh), in the nets' layout."""
        return (images * 2 - 1).contiguous(memory_format=self.memory_format)

    def _next_real_images(self) -> Tensor:
        """D's real images for this batch (``real_batch="separate"``)."""
        if self._real_batches is None:
            raise RuntimeError("real_batch='separate' reads its stream from on_train_start; "
                               "call training_step through a Trainer")
        images = next(self._real_batches)["image"]
        return self._network_input(images.to(self.device, non_blocking=True))

    def _sample(self, batch_size: int) -> Tuple[Tensor, Tensor]:
        """Region i ~ U(n) and z_i ~ N(0, I) for each image (Algorithm 1, lines 3–4)."""
        region = torch.randint(self.num_regions, (batch_size,), device=self.device)
        shape = (batch_size, self.num_regions, self.z_dim) if self.redraw_mode == "all" else (
            batch_size, self.z_dim)
        return region, torch.randn(shape, device=self.device)

    def _fakes(self, images: Tensor, masks: Tensor, region: Tensor,
               z: Tensor) -> Tuple[Tensor, Tensor]:
        """The redrawn images D judges, and the image δ reads to recover z."""
        if self.redraw_mode == "all":
            redrawn, generated = self.nets.redraw_all(images, masks, z)
            return redrawn.flatten(0, 1), generated
        fakes = self.nets.redraw(images, masks, z, region)
        return fakes, fakes

    def _generator_terms(self, images: Tensor, region: Tensor, z: Tensor) -> Tuple[Tensor, Tensor]:
        """-D(G_F(I, z_i, i)) and ||δ_i(G_F(I, z_i, i)) - z_i||² (Algorithm 1, lines 5–7)."""
        masks = self.nets.mask(images)
        fakes, delta_input = self._fakes(images, masks, region, z)
        adversarial = hinge_g_loss(self.nets.discriminator(fakes))
        z_hat = self.nets.reconstruct_z(delta_input)
        if self.redraw_mode == "one":  # only head δ_i is asked for z_i
            z_hat = z_hat[torch.arange(images.shape[0], device=self.device), region]
        return adversarial, F.mse_loss(z_hat.float(), z)

    def _discriminator_loss(self, images: Tensor, real: Tensor, region: Tensor,
                            z: Tensor) -> Tensor:
        """Hinge loss on ``real`` images and ``images`` redrawn by the updated F and G_k
        (Algorithm 1, lines 11–15)."""
        with torch.no_grad():
            fakes, _ = self._fakes(images, self.nets.mask(images), region, z)
        # One pass over real and fake together: one power iteration per SN layer, bigger GEMMs.
        scores = self.nets.discriminator(torch.cat([real, fakes.to(real.dtype)]))
        return hinge_d_loss(scores[: real.shape[0]], scores[real.shape[0]:])

    # --- collapse detection and restart (callbacks/collapse.py) -----------------------------------
    @torch.no_grad()
    def collapse_statistic(self, images: Tensor) -> Tensor:
        """The smallest region's share of F's soft masks on ``images`` (in [0, 1]), the
        code's criterion: a region whose share tends to 0 is the empty-mask collapse of §4."""
        masks = self.nets.mask(self._network_input(images)).float()
        return masks.mean(dim=(0, 2, 3)).min()

    def restart(self, seed: int) -> None:
        """Re-initialise every network and optimizer state, as the code does on collapse.

        The fresh weights come from ``seed`` alone, so every DDP rank draws the same ones;
        they are copied into the existing parameters, which optimizers and DDP keep tracking.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = ReDONetworks(**self._network_args)
        self.nets.load_state_dict(fresh.state_dict())
        for optimizer in self.optimizers():
            optimizer.optimizer.state.clear()
