"""A test-only datamodule and method that exercise the whole path in seconds.

``TinySquaresDataModule``: one to three coloured squares on a dark background, generated
from (seed, split, index), with instance masks, semantic classes (square = 1) and counts.
``TinyMethod``: a fully convolutional net predicts K soft masks; each component's colour is
the mask-weighted mean of the image (a differentiable "decoder"). With ``adversarial=True``
it trains with two optimisers stepping separately through :class:`AlternatingUpdates`
(reconstruction step, then a small critic step), which is what the DDP tests need. It takes
the training parts (exact resume, non-finite guard) that the resume and CLI tests exercise.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torchmetrics import SumMetric
from torch.nn import functional as F
from torch.utils.data import Dataset

from datamodules.base import ObjectDataModule
from objdecomp.methods.base import DecompositionModule
from objdecomp.training import (AlternatingUpdates, EmulatedBF16Warning, ExactResume,
                                NonFiniteLossGuard, Player)
from objdecomp.types import Decomposition


class TinySquares(Dataset):
    def __init__(self, size: int, image_size: int, seed: int):
        self.size, self.image_size, self.seed = size, image_size, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        s = self.image_size
        image = torch.full((3, s, s), 0.1)
        mask = torch.zeros(s, s, dtype=torch.int64)
        count = int(torch.randint(1, 4, (1,), generator=g))
        for obj in range(1, count + 1):
            side = int(torch.randint(3, s // 2, (1,), generator=g))
            y, x = (int(v) for v in torch.randint(0, s - side, (2,), generator=g))
            image[:, y : y + side, x : x + side] = torch.rand(3, 1, 1, generator=g) * 0.7 + 0.3
            mask[y : y + side, x : x + side] = obj
        visible = torch.unique(mask)
        return {"image": image, "mask": mask, "semantic": (mask > 0).long(),
                "count": torch.tensor(len(visible) - 1 if 0 in visible else len(visible))}


class TinySquaresDataModule(ObjectDataModule):
    channels, max_objects, num_classes, num_background = 3, 3, 2, 1

    def __init__(self, image_size: int = 16, train_size: int = 64, val_size: int = 16,
                 test_size: int = 21, batch_size: int = 8, eval_batch_size: int = 8,
                 num_workers: int = 0, seed: int = 0):
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        self.image_size = image_size
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}

    def make_dataset(self, split: str) -> Dataset:
        offset = {"train": 0, "val": 1, "test": 2}[split]
        return TinySquares(self.sizes[split], self.image_size, seed=self.seed * 3 + offset + 1)


class TinyMethod(DecompositionModule):
    """K-component soft segmenter with mean-colour reconstruction (tests only)."""

    def __init__(self, num_components: int = 4, hidden: int = 8, lr: float = 1e-2,
                 adversarial: bool = False, nan_at_step: int = -1, seconds_per_step: float = 0.0,
                 **facts):
        super().__init__(**facts)
        self.save_hyperparameters()
        self.images_seen = SumMetric()  # test images counted over all ranks
        self.net = nn.Sequential(nn.Conv2d(self.channels, hidden, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(hidden, num_components, 3, padding=1))
        if adversarial:
            self.critic = nn.Sequential(nn.Conv2d(self.channels, hidden, 3, stride=2), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hidden, 1))
            self.automatic_optimization = False
            self.updates = AlternatingUpdates([Player("recon"),
                                               Player("critic", gradient_clip_val=1.0)])

    def decompose(self, images: torch.Tensor) -> Decomposition:
        masks = self.net(images).softmax(1)  # [B, K, H, W]
        weights = masks.unsqueeze(2)  # [B, K, 1, H, W]
        colours = (weights * images.unsqueeze(1)).sum((3, 4), keepdim=True) / (
            weights.sum((3, 4), keepdim=True) + 1e-6)
        layers = colours.expand(-1, -1, -1, *images.shape[-2:])
        background = torch.zeros(masks.shape[1], dtype=torch.bool, device=images.device)
        background[0] = True
        return Decomposition(recon=(weights * layers).sum(1), masks=masks,
                             background=background, layers=layers)

    def reconstruction_loss(self, images: torch.Tensor) -> torch.Tensor:
        loss = F.mse_loss(self.decompose(images).recon, images)
        if self.global_step == self.hparams.nan_at_step:
            loss = loss * float("nan")
        return loss

    def test_step(self, batch, batch_idx):
        super().test_step(batch, batch_idx)
        self.images_seen.update(torch.tensor(float(len(batch["image"]))))

    def on_test_epoch_end(self):
        super().on_test_epoch_end()
        self.log("test/images_seen", self.images_seen.compute())
        self.images_seen.reset()

    def training_step(self, batch, batch_idx):
        time.sleep(self.hparams.seconds_per_step)  # lets the resume test kill a run mid-way
        images = batch["image"]
        if not self.hparams.adversarial:
            loss = self.reconstruction_loss(images)
            self.log_losses({"recon": loss})
            return loss
        self.log_losses(self.updates.step(self, {
            "recon": lambda: self.reconstruction_loss(images)
            - 1e-3 * self.critic(self.decompose(images).recon).mean(),
            "critic": lambda: F.softplus(self.critic(self.decompose(images).recon.detach())).mean()
            + F.softplus(-self.critic(images)).mean()}))

    def configure_optimizers(self):
        model_opt = torch.optim.Adam(self.net.parameters(), lr=self.hparams.lr)
        if not self.hparams.adversarial:
            return model_opt
        return model_opt, torch.optim.Adam(self.critic.parameters(), lr=self.hparams.lr)

    def configure_callbacks(self):
        return [ExactResume(), NonFiniteLossGuard(), EmulatedBF16Warning()]
