"""ReDO's supervised baseline (§5.2, Fig. 4): the same mask network F trained on N labelled images.

The paper compares ReDO with "a supervised method, keeping the same architecture for F",
trained on 10 to 10,000 labelled images. The N images are a fixed random subset (seeded)
of ``label_split``: ``train`` for Flowers and CUB; ``val`` for LFW, whose training images
have no masks; then the validation images left out of the subset serve for model
selection. The paper gives no optimiser for this baseline: we use Adam at 1e-4 with a
per-pixel cross-entropy, region 0 = object, region 1 = background.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, Subset

from objdecomp.methods.base import DecompositionModule
from objdecomp.methods.redo.networks import MaskNetwork
from objdecomp.nn.gan import orthogonal_init_
from objdecomp.types import Decomposition


class RepeatedSubset(Dataset):
    """Items ``indices`` of ``dataset``, cycled to at least ``length`` items per epoch, so
    that a handful of labelled images still fills whole batches."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], length: int):
        self.dataset, self.indices = dataset, list(indices)
        self.length = max(length, len(self.indices))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return self.dataset[self.indices[index % len(self.indices)]]


class ReDOSupervised(DecompositionModule):
    """F trained with ground-truth masks on ``num_labelled`` images.

    Args:
        num_labelled: N, the number of labelled training images (Fig. 4: 10 to 10,000).
        label_split: split the N images come from (``train``, or ``val`` for LFW).
        subset_seed: seed of the choice of the N images.
        min_epoch_items: the N images are cycled to at least this many items per epoch.
        lr, weight_decay: Adam's learning rate and L2 weight decay (our choice).
        mask_width, mask_res_blocks, mask_downsampling: F's width, residual blocks and
            stride-2 steps (as in ReDO).
        init_gain: orthogonal initialisation gain (as in ReDO).
    """

    def __init__(self, num_labelled: int = 100, label_split: str = "train", subset_seed: int = 0,
                 min_epoch_items: int = 1000, lr: float = 1e-4, weight_decay: float = 1e-4,
                 mask_width: int = 64, mask_res_blocks: int = 3, mask_downsampling: int = 2,
                 init_gain: float = 0.8, image_size: int = 128, channels: int = 3, max_objects: int = 1,
                 num_classes: int = 0, num_background: int = 1,
                 init_checkpoint: Optional[str] = None):
        super().__init__(image_size, channels, max_objects, num_classes, num_background,
                         init_checkpoint)
        if label_split not in ("train", "val"):
            raise ValueError(f"label_split must be 'train' or 'val', got {label_split!r}")
        self.save_hyperparameters()
        self.num_labelled, self.label_split, self.subset_seed = num_labelled, label_split, subset_seed
        self.min_epoch_items, self.lr, self.weight_decay = min_epoch_items, lr, weight_decay
        self.mask = orthogonal_init_(MaskNetwork(channels, 2, mask_width, mask_res_blocks,
                                                   downsampling=mask_downsampling), init_gain)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":
            self._restrict_training_data()

    def _restrict_training_data(self) -> None:
        """Replace the datamodule's training set by the N labelled images."""
        datamodule = self.trainer.datamodule
        datasets: Dict[str, Dataset] = getattr(datamodule, "datasets", None)
        if datasets is None or self.label_split not in datasets:
            raise RuntimeError("ReDOSupervised needs an ObjectDataModule set up for fitting")
        source = datasets[self.label_split]
        if self.num_labelled > len(source):
            raise ValueError(f"num_labelled={self.num_labelled} exceeds the {len(source)} "
                             f"images of the '{self.label_split}' split")
        order = torch.randperm(len(source), generator=torch.Generator().manual_seed(self.subset_seed))
        chosen, rest = order[: self.num_labelled].tolist(), order[self.num_labelled:].tolist()
        datasets["train"] = RepeatedSubset(source, chosen, self.min_epoch_items)
        if self.label_split == "val":  # select models on validation images not trained on
            datasets["val"] = Subset(source, sorted(rest))

    def decompose(self, images: Tensor) -> Decomposition:
        masks = self.mask(images * 2 - 1).float()
        background = torch.tensor([False, True], device=images.device)
        return Decomposition(recon=images, masks=masks, background=background,
                             layers=images[:, None].expand(-1, 2, -1, -1, -1))

    def training_step(self, batch: Dict[str, Tensor], batch_idx: int) -> Tensor:
        logits = self.mask.logits(batch["image"] * 2 - 1)
        target = (batch["mask"] < self.num_background).long()  # 0 = object, 1 = background
        loss = F.cross_entropy(logits.float(), target)
        self.log_losses({"ce": loss})
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.mask.parameters(), lr=self.lr, weight_decay=self.weight_decay)
