"""Identity switches (CIS Table 2): how often an object changes output channel along a sequence.

For every frame of the identity-switch sequence (datamodules/identity_switch.py: ground-truth
id 1 is always the ellipse, id 2 the square) each object is given the predicted channel that
overlaps it best, as the authors' evaluation does (IoU with the soft masks binarised at 0.04,
objects of at least 5 pixels). Over the sequence an object's own channel is the one it lands in
most often; a frame is a switch when an object lands elsewhere. The state is the joint
histogram of the two objects' channels, so the count is exact under DDP.

``compute()``: ``""`` frames with a switch (the Table 2 count), ``rate`` that count over the
frames, ``frames``, and ``shared``: frames where both objects land in the same channel (a
segmentation that merges the two objects never "switches"; this says when the count is vacuous).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import torch
from torch import Tensor

from objdecomp.metrics.base import DecompositionMetric
from objdecomp.types import Decomposition

OBJECT_IDS = (1, 2)  # the ellipse and the square of the sequence


def best_channels(masks: Tensor, truth: Tensor, object_id: int, threshold: float = 0.04,
                  min_pixels: int = 5) -> Tensor:
    """``[B]`` the channel of ``masks`` ``[B, K, H, W]`` with the best IoU against the object
    ``truth == object_id``; -1 where the object has fewer than ``min_pixels`` pixels."""
    target = (truth == object_id)[:, None]
    predicted = masks > threshold
    intersection = (predicted & target).sum((2, 3)).double()
    union = (predicted | target).sum((2, 3)).double()
    best = (intersection / union.clamp_min(1)).argmax(1)
    return torch.where(target.sum((1, 2, 3)) >= min_pixels, best, torch.full_like(best, -1))


class IdentitySwitches(DecompositionMetric):
    """Frames in which one of the sequence's two objects leaves its most frequent channel."""

    required_keys = ("mask",)
    higher_is_better = False

    def __init__(self, num_channels: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_channels = num_channels
        # Channel K stands for "object not visible" (never counted as a switch).
        self.add_state("joint", torch.zeros(num_channels + 1, num_channels + 1, dtype=torch.int64),
                       dist_reduce_fx="sum")

    def update(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> None:
        first, second = (best_channels(decomposition.masks, batch["mask"], i) for i in OBJECT_IDS)
        first = torch.where(first < 0, self.num_channels, first)
        second = torch.where(second < 0, self.num_channels, second)
        index = first * (self.num_channels + 1) + second
        self.joint += torch.bincount(index, minlength=self.joint.numel()).view_as(self.joint)

    def compute(self) -> Dict[str, Tensor]:
        k = self.num_channels
        frames = self.joint.sum()
        own = [self.joint[:k].sum(1), self.joint[:, :k].sum(0)]  # each object's channel counts
        first, second = (int(counts[:k].argmax()) for counts in own)
        stays_first = torch.zeros(k + 1, dtype=torch.bool, device=self.joint.device)
        stays_second = stays_first.clone()
        stays_first[[first, k]] = True
        stays_second[[second, k]] = True
        kept = self.joint[stays_first][:, stays_second].sum()
        switches = (frames - kept).double()
        shared = self.joint.diagonal()[:k].sum().double()
        return {"": switches, "rate": switches / frames.clamp_min(1), "frames": frames.double(),
                "shared": shared}
