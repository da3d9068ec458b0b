"""LAVAE: the location-appearance VAE (Dittadi & Winther 2019, §2 and appendices A-B).

Generative model (Eq. 1-4): n ~ Cat(a) over 0..M with learned a; n locations drawn uniformly
without replacement among the D pixels; appearances z_app ~ N(0, I_L); the Bernoulli means λ
are the sum of the sprites f_sprite(z_app^(i)) convolved with their one-hot locations (3D terms
for colour images, §3.2). Inference (Eq. 5-11): h_app and h_loc from two fully convolutional
nets; n = f_count(h_loc), deterministic; locations by Gumbel-softmax without replacement; each
object's appearance posterior read from h_app at its location. Training minimises the negative
ELBO (Eq. 6, KL of appendix A) plus the warm-up of appendix B.

Where we had to choose (docs/methods/lavae.md): λ is clamped to [ε, 1 − ε] (overlapping sprites
can sum above 1); the location KL term of training is Σ_d z̃_d log b_d for the relaxed sample z̃
(the categorical's log-probability at the relaxed one-hot); the warm-up's target is the
auxiliary VAE's KL map upsampled bilinearly to H × W.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
from torch import Tensor, nn

from objdecomp.methods.base import DecompositionModule
from objdecomp.methods.lavae.inference import (count_objects, paste_sprites, place_sprites,
                                               prior_location_log_prob, sample_locations,
                                               set_log_prob)
from objdecomp.methods.lavae.networks import (AppearanceNet, AuxiliaryVAE, LocationNet,
                                              SpriteDecoder)
from objdecomp.methods.lavae.pictures import LAVAEPictures
from objdecomp.nn.vae import (bernoulli_log_likelihood, gaussian_kl, gaussian_log_density,
                              importance_log_weights, likelihood_bounds,
                              standard_normal_log_density)
from objdecomp.schedules import Schedule, ScheduleOrNumber, as_lr_lambda, log_schedules
from objdecomp.training import EmulatedBF16Warning, ExactResume, NonFiniteLossGuard
from objdecomp.types import Decomposition

EPS = 1e-4  # λ is clamped to [EPS, 1 − EPS] before the Bernoulli likelihood


def mean_logits(lam: Tensor) -> Tensor:
    """Bernoulli logits of the means λ (clamped: sums of sprites may exceed 1)."""
    return torch.logit(lam.clamp(EPS, 1 - EPS))


class LAVAE(LAVAEPictures, DecompositionModule):
    """The location-appearance VAE.

    Args:
        image_size, channels, max_objects, num_classes, num_background, init_checkpoint:
            dataset facts and warm start (see :class:`DecompositionModule`).
        max_count: M, the largest number of objects (App. B: 10).
        latent_dim: L (App. B: 32).
        sprite_size: f_sprite's output size (App. B: 17 for multi-MNIST, 21 for multi-dSprites).
        width, blocks: channels and residual blocks of the inference nets (App. B: 4 blocks).
        sprite_width, aux_width: channels of f_sprite and of the auxiliary VAE.
        gamma: γ, the factor on the location logits (App. B: 4).
        count_threshold: f_count's threshold on γ-scaled logits (App. B: 4γ = 16).
        count_window: the neighbourhood (odd side) in which f_count's local maxima are maximal
            (the paper does not say; 3 is the smallest).
        tau: Gumbel-softmax temperature (App. B: exponential 0.5 -> 0.02 over 100k steps).
        aux_weight: weight of the warm-up loss (App. B: 1 for 30k steps, then linear to 0
            over 30k).
        force_one: probability of forcing n = 1 (App. B: 1 for 30k steps, then linear to 0.1
            over 30k).
        lr: Adamax learning rate of everything but the location net (App. B: 1e-3).
        location_lr: the location net's (App. B: 1e-4 multi-MNIST, 5e-4 multi-dSprites).
        location_lr_decay: its factor (App. B: exponential 1 -> 1/100 over 100k steps).
        aux_latent, aux_side: the auxiliary VAE's latent tensor (App. B: 8 × 11 × 11 at
            64 × 64; ``aux_side`` defaults to 11/64 of the image size).
        importance_samples, val_importance_samples, images_per_pass: the −log p(x) bound
            (Table 1: 100 samples), as :class:`~objdecomp.methods.conv_vae.ConvVAE`.
    """

    evaluation_scores = ("neg_elbo", "nll_bound")

    def __init__(self, image_size: int = 64, channels: int = 1, max_objects: int = 3,
                 num_classes: int = 0, num_background: int = 1,
                 init_checkpoint: Optional[str] = None, max_count: int = 10,
                 latent_dim: int = 32, sprite_size: int = 17, width: int = 48, blocks: int = 4,
                 sprite_width: int = 64, aux_width: int = 32, gamma: float = 4.0,
                 count_threshold: float = 16.0, count_window: int = 3, tau: ScheduleOrNumber = 0.5,
                 aux_weight: ScheduleOrNumber = 0.0, force_one: ScheduleOrNumber = 0.0,
                 lr: float = 1e-3, location_lr: float = 1e-4,
                 location_lr_decay: Optional[Schedule] = None, aux_latent: int = 8,
                 aux_side: Optional[int] = None, importance_samples: int = 100,
                 val_importance_samples: int = 1, images_per_pass: int = 256):
        super().__init__(image_size, channels, max_objects, num_classes, num_background,
                         init_checkpoint)
        # Schedules stay out of the checkpoint (weights_only loading); the config has them.
        self.save_hyperparameters(ignore=["tau", "aux_weight", "force_one", "location_lr_decay"])
        self.tau, self.aux_weight, self.force_one = tau, aux_weight, force_one
        self.location_lr_decay = location_lr_decay
        self.appearance_net = AppearanceNet(channels, width, latent_dim, blocks)
        self.location_net = LocationNet(channels, width, gamma, blocks)
        self.sprite_decoder = SpriteDecoder(latent_dim, channels, sprite_size, sprite_width)
        # App. B's 11 x 11 grid is for 64 x 64 images; other sizes keep its proportion.
        side = aux_side if aux_side is not None else max(1, round(11 * image_size / 64))
        self.auxiliary = AuxiliaryVAE(channels, image_size, aux_width, aux_latent, side)
        self.count_logits = nn.Parameter(torch.zeros(max_count + 1))  # a of Eq. 2, as logits

    # --- the generative model (Eq. 1-4) ---------------------------------------------------
    def render(self, z_app: Tensor, locations: Tensor, present: Tensor) -> Tensor:
        """λ ``[B, C, H, W]`` from appearances ``[B, N, L]`` and hard locations ``[B, N]``
        (only the ``present`` ``[B, N]`` slots are drawn)."""
        b, h, w = len(z_app), self.image_size, self.image_size
        owners = torch.arange(b, device=z_app.device)[:, None].expand_as(present)[present]
        if not present.any():
            return z_app.new_zeros(b, self.channels, h, w)
        sprites = self.sprite_decoder(z_app[present])
        return paste_sprites(sprites, locations[present], owners, b, h, w)

    @torch.no_grad()
    def sample(self, num_images: int, counts: Optional[Tensor] = None) -> Tensor:
        """Bernoulli means of prior samples (Fig. 2, 4); ``counts`` ``[num_images]`` overrides
        p(n) (Fig. 9: n uniform on {4, 5})."""
        if counts is None:
            counts = torch.multinomial(self.count_logits.softmax(0), num_images, True)
        counts = counts.to(self.device)
        slots = int(counts.max()) if len(counts) else 0
        d = self.image_size ** 2
        locations = torch.rand(num_images, d, device=self.device).argsort(1)[:, :slots]  # Eq. 3
        z_app = torch.randn(num_images, slots, self.hparams.latent_dim, device=self.device)
        present = torch.arange(slots, device=self.device) < counts[:, None]
        return self.render(z_app, locations, present).clamp(0, 1)

    # --- inference (Eq. 5-11) ---------------------------------------------------------------
    def infer(self, images: Tensor) -> Dict[str, Tensor]:
        """h_app ``[B, 2L, D]``, h_loc ``[B, H, W]`` and n̂ = f_count(h_loc) ``[B]``."""
        h_loc = self.location_net(images)
        n = count_objects(h_loc.detach(), self.hparams.count_threshold, self.hparams.max_count,
                          self.hparams.count_window)
        return {"h_app": self.appearance_net(images).flatten(2), "h_loc": h_loc, "n": n}

    def posterior_mode(self, images: Tensor) -> Dict[str, Tensor]:
        """The most likely locations (the n̂ largest logits) and their appearance means."""
        inferred = self.infer(images)
        n = inferred["n"]
        slots = int(n.max()) if len(n) else 0
        locations = inferred["h_loc"].flatten(1).topk(slots, 1).indices
        present = torch.arange(slots, device=images.device) < n[:, None]
        stats = inferred["h_app"].gather(2, locations[:, None].expand(
            -1, inferred["h_app"].shape[1], -1)).transpose(1, 2)
        mean, _ = stats.chunk(2, -1)
        return {**inferred, "locations": locations, "present": present, "z_app": mean}

    def decompose(self, images: Tensor) -> Decomposition:
        mode = self.posterior_mode(images)
        b, c, h, w = images.shape
        present, slots, m = mode["present"], mode["locations"].shape[1], self.hparams.max_count
        layers = images.new_zeros(b, m + 1, c, h, w)
        if present.any():
            sprites = self.sprite_decoder(mode["z_app"][present])
            p = len(sprites)
            placed = paste_sprites(sprites, mode["locations"][present], torch.arange(p, device=images.device),
                                   p, h, w)
            per_slot = layers.new_zeros(b, slots, c, h, w)
            per_slot[present] = placed
            layers[:, 1:slots + 1] = per_slot
        recon = layers.sum(1).clamp(0, 1)
        # Ownership: each object by its sprite's intensity, the background by what is left.
        alpha = layers[:, 1:].amax(2).clamp(0, 1)
        masks = torch.cat([(1 - alpha.sum(1, keepdim=True)).clamp(min=0), alpha], 1) + 1e-6
        background = torch.zeros(m + 1, dtype=torch.bool, device=images.device)
        background[0] = True
        return Decomposition(recon=recon, masks=masks / masks.sum(1, keepdim=True),
                             background=background, layers=layers, count=mode["n"])

    # --- training (Eq. 6, appendix A, appendix B) -----------------------------------------
    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        images = batch["image"]
        b, c, h, w = images.shape
        s = log_schedules(self, {"tau": self.tau, "aux_weight": self.aux_weight,
                                 "force_one": self.force_one})
        inferred = self.infer(images)
        n = inferred["n"]
        forced = torch.rand(b, device=images.device) < s["force_one"]  # App. B warm-up
        n = torch.where(forced, torch.ones_like(n), n)
        slots = int(n.max())
        logits = inferred["h_loc"].flatten(1)
        locations, log_b, z_loc = sample_locations(logits, slots, s["tau"])
        present = torch.arange(slots, device=images.device) < n[:, None]
        # Eq. 9-10: the appearance posterior read from h_app at the (relaxed) location.
        mean, logvar = torch.einsum("bnd,bcd->bnc", z_loc, inferred["h_app"]).chunk(2, -1)
        z_app = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        lam = images.new_zeros(b, c, h, w)
        if present.any():
            placed = place_sprites(self.sprite_decoder(z_app[present]),
                                   z_loc[present].view(-1, h, w))
            owners = torch.arange(b, device=images.device)[:, None].expand_as(present)[present]
            lam = lam.index_add(0, owners, placed)
        reconstruction = -bernoulli_log_likelihood(mean_logits(lam), images)
        # Appendix A: the three KL terms (q(n) is a point mass: KL(q(n) || p(n)) = −log p(n̂)).
        kl_app = (gaussian_kl(mean.flatten(0, 1), logvar.flatten(0, 1)).view(b, slots)
                  * present).sum(1)
        d = h * w
        log_q = (z_loc * log_b.clamp(min=-1e3)).sum(-1)  # relaxed log b^(i) at z̃^(i)
        log_p = -torch.log(d - torch.arange(slots, device=images.device, dtype=images.dtype))
        kl_loc = ((log_q - log_p) * present).sum(1)
        kl_n = -self.count_logits.log_softmax(0)[n]
        neg_elbo = reconstruction + kl_app + kl_loc + kl_n
        terms = {"reconstruction": reconstruction.mean(), "kl_app": kl_app.mean(),
                 "kl_loc": kl_loc.mean(), "kl_n": kl_n.mean(), "neg_elbo": neg_elbo.mean(),
                 "count": n.float().mean()}
        loss = terms["neg_elbo"]
        if s["aux_weight"] > 0:
            aux = self.warm_up_terms(images, inferred["h_loc"])
            loss = loss + aux["aux_vae"] + s["aux_weight"] * aux["aux_location"]
            terms.update(aux)
        if "count" in batch:
            terms["count_accuracy"] = (inferred["n"] == batch["count"]).float().mean()
        self.log_losses({"loss": loss, **terms})
        return loss

    def warm_up_terms(self, images: Tensor, h_loc: Tensor) -> Dict[str, Tensor]:
        """App. B: the auxiliary VAE's negative ELBO, and the squared distance between h_loc
        and its location-wise KL map (the map is a target: no gradient flows into it)."""
        logits, mean, logvar = self.auxiliary(images)
        kl_map = 0.5 * (mean.square() + logvar.exp() - logvar - 1).sum(1, keepdim=True)
        target = self.auxiliary.kl_map_on_pixels(kl_map.detach())
        aux_vae = -bernoulli_log_likelihood(logits, images) + kl_map.flatten(1).sum(1)
        return {"aux_vae": aux_vae.mean(),
                "aux_location": (h_loc - target).square().flatten(1).sum(1).mean()}

    def configure_optimizers(self):
        location = list(self.location_net.parameters())
        ids = {id(p) for p in location}
        rest = [p for p in self.parameters() if id(p) not in ids]
        optimizer = torch.optim.Adamax([{"params": rest, "lr": self.hparams.lr},
                                        {"params": location, "lr": self.hparams.location_lr}])
        if self.location_lr_decay is None:
            return optimizer
        decay = as_lr_lambda(self.location_lr_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [lambda _: 1.0, decay])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_callbacks(self):
        return [ExactResume(), NonFiniteLossGuard(), EmulatedBF16Warning()]

    # --- evaluation: the bounds of Table 1 ------------------------------------------------
    def score_images(self, batch: Mapping[str, Tensor], decomposition: Decomposition
                     ) -> Dict[str, Tensor]:
        """``neg_elbo`` and ``nll_bound`` per image from K importance samples of (z_loc, z_app)
        given n̂, with the exact discrete log-probabilities of n and of the location *set*
        (summed over its orders on both sides: p gives each order the same probability)."""
        images = batch["image"]
        inferred = self.infer(images)
        n, logits = inferred["n"], inferred["h_loc"].flatten(1)
        b, d, slots = len(images), logits.shape[1], int(n.max())
        present = torch.arange(slots, device=images.device) < n[:, None]
        log_prior_discrete = (self.count_logits.log_softmax(0)[n].double()
                              + prior_location_log_prob(n, d, unordered=True))

        def draw(num_samples: int) -> Tensor:
            rep = lambda t: t.repeat(num_samples, *([1] * (t.dim() - 1)))  # noqa: E731
            logits_s, n_s, present_s = rep(logits), rep(n), rep(present)
            locations, _, _ = sample_locations(logits_s, slots, relaxed=False)
            h_app = rep(inferred["h_app"])
            stats = h_app.gather(2, locations[:, None].expand(-1, h_app.shape[1], -1))
            mean, logvar = stats.transpose(1, 2).chunk(2, -1)
            z_app = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
            lam = self.render(z_app, locations, present_s)
            log_x = bernoulli_log_likelihood(mean_logits(lam), rep(images))
            log_app = ((standard_normal_log_density(z_app, 1)
                        - gaussian_log_density(z_app, mean, logvar, 1)) * present_s).sum(1)
            log_w = (log_x + log_app).double() + rep(log_prior_discrete) \
                - set_log_prob(logits_s, locations, n_s)
            return log_w.view(num_samples, b).float()

        per_pass = max(1, self.hparams.images_per_pass // b)
        return likelihood_bounds(importance_log_weights(draw, self._importance_samples(), per_pass))

    def _importance_samples(self) -> int:
        validating = self._trainer is not None and not self.trainer.testing
        return self.hparams.val_importance_samples if validating else self.hparams.importance_samples
