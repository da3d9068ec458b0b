"""Decomposition grids for every method, from the Decomposition contract alone."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from torch import Tensor
from torchvision.utils import save_image

from datamodules.base import ObjectDataModule
from objdecomp.visualize import decomposition_rows, save_rows


class DecompositionPictures(pl.Callback):
    """Saves (and logs to W&B) a grid of input, reconstruction, segmentation, ground truth and
    components for a fixed set of validation images every ``every_n_steps`` optimizer steps,
    at the end of fit, and for the first test images; plus the method's own
    ``pictures(batch, decomposition)`` of the same images.

    Files go to ``<run>/pictures/{step<N>,test}[-<name>].png``.

    Args:
        every_n_steps: picture period in optimizer steps (0 disables the periodic pictures).
        num_images: images (grid columns) per picture.
        max_layers: component rows per picture.
    """

    def __init__(self, every_n_steps: int = 500, num_images: int = 8, max_layers: int = 8):
        self.every_n_steps, self.num_images, self.max_layers = every_n_steps, num_images, max_layers
        self._last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and step != self._last_step:
            self._last_step = step
            self.draw(trainer, pl_module, self._fixed_batch(trainer, "val"), f"step{step:07d}")

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_step != self._last_step:
            self.draw(trainer, pl_module, self._fixed_batch(trainer, "val"),
                      f"step{trainer.global_step:07d}")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            tag = getattr(pl_module, "evaluated_split", "test")  # "test", or "train" for Table 1
            self.draw(trainer, pl_module, {k: v[: self.num_images] for k, v in batch.items()}, tag)

    @torch.no_grad()
    def draw(self, trainer, pl_module, batch: Optional[Dict[str, Tensor]], tag: str) -> None:
        """Render one grid; only rank 0 draws (no collective calls inside)."""
        if batch is None or not trainer.is_global_zero:
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            batch = {k: v.to(pl_module.device) for k, v in batch.items()}
            images = batch["image"]
            decomposition = pl_module.checked_decompose(images)
            rows = decomposition_rows(images, decomposition, batch, self.max_layers)
            pictures = {"decomposition": save_rows(rows, self._path(trainer, tag))}
            overlays = mask_overlays(images, decomposition.segmentation(), batch.get("mask"))
            for name, picture in pl_module.pictures(batch, decomposition).items():
                path = self._path(trainer, f"{tag}-{name}")
                path.parent.mkdir(parents=True, exist_ok=True)
                save_image(picture.float().cpu(), path)
                pictures[name] = picture
        finally:
            pl_module.train(was_training)
        self._log(trainer, tag, pictures, overlays)

    def _fixed_batch(self, trainer, split: str) -> Optional[Dict[str, Tensor]]:
        """The first images of ``split``, asked of the datamodule (None without one)."""
        datamodule = trainer.datamodule
        if not isinstance(datamodule, ObjectDataModule):
            return None
        return datamodule.sample_batch(split, self.num_images)

    @staticmethod
    def _path(trainer, tag: str) -> Path:
        return Path(trainer.default_root_dir) / "pictures" / f"{tag}.png"

    @staticmethod
    def _log(trainer, tag: str, pictures: Dict[str, Tensor], overlays: Dict[str, list]) -> None:
        # Evaluation pictures carry no step: W&B drops entries whose step goes backwards.
        step = trainer.global_step if tag.startswith("step") else None
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                for name, picture in pictures.items():
                    logger.log_image(key=f"pictures/{name}", images=[picture], caption=[tag], step=step)
                logger.log_image(key="pictures/masks", caption=[tag] * len(overlays["images"]),
                                 step=step, **overlays)


def mask_overlays(images: Tensor, segmentation: Tensor, truth: Optional[Tensor] = None) -> Dict[str, list]:
    """``log_image`` arguments for W&B's interactive mask overlays: each image with its predicted
    components (and the ground truth's objects when the batch has them) as toggleable layers."""
    def layer(labels: Tensor, name: str) -> Dict[str, object]:
        ids = labels.cpu().numpy().astype("uint8")
        return {"mask_data": ids, "class_labels": {int(k): f"{name} {k}" for k in sorted(set(ids.flat))}}

    overlays = {"images": [image.float().cpu() for image in images], "masks": []}
    for i in range(len(images)):
        masks = {"prediction": layer(segmentation[i], "component")}
        if truth is not None:
            masks["ground_truth"] = layer(truth[i], "object")
        overlays["masks"].append(masks)
    return overlays
