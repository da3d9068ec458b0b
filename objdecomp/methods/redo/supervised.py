"""ReDO's supervised baseline (§5.2, Fig. 4): the same mask network F trained on N labelled images.

The paper compares ReDO with "a supervised method, keeping the same architecture for F",
trained on 10 to 10,000 labelled images. The N images are a data option, the datamodule's
labelled subset (``data.init_args.labelled_subset``, ``labelled_split``, ``labelled_seed``;
datamodules/subsets.py): a seeded choice of the training images for Flowers and CUB, of the
validation images for LFW, whose training images have no masks (the validation images left
out of the choice then select the model). The paper gives no optimiser for this baseline: we
use Adam at 1e-4 with a per-pixel cross-entropy, region 0 = object, region 1 = background.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from objdecomp.methods.base import DecompositionModule
from objdecomp.methods.redo.networks import MaskNetwork
from objdecomp.nn.gan import orthogonal_init_
from objdecomp.training import EmulatedBF16Warning, ExactResume, NonFiniteLossGuard
from objdecomp.types import Decomposition


class ReDOSupervised(DecompositionModule):
    """F trained with ground-truth masks on the images the datamodule trains on (its labelled
    subset of N images, Fig. 4: 10 to 10,000).

    Args:
        lr, weight_decay: Adam's learning rate and L2 weight decay (our choice).
        mask_width, mask_res_blocks, mask_downsampling: F's width, residual blocks and
            stride-2 steps (as in ReDO).
        init_gain: orthogonal initialisation gain (as in ReDO).
    """

    def __init__(self, lr: float = 1e-4, weight_decay: float = 1e-4,
                 mask_width: int = 64, mask_res_blocks: int = 3, mask_downsampling: int = 2,
                 init_gain: float = 0.8, image_size: int = 128, channels: int = 3, max_objects: int = 1,
                 num_classes: int = 0, num_background: int = 1,
                 init_checkpoint: Optional[str] = None):
        super().__init__(image_size, channels, max_objects, num_classes, num_background,
                         init_checkpoint)
        self.save_hyperparameters()
        self.lr, self.weight_decay = lr, weight_decay
        self.mask = orthogonal_init_(MaskNetwork(channels, 2, mask_width, mask_res_blocks,
                                                   downsampling=mask_downsampling), init_gain)

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

    def configure_callbacks(self):
        return [ExactResume(), NonFiniteLossGuard(), EmulatedBF16Warning()]
