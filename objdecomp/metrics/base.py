"""The interface between metrics and the two contracts.

A :class:`DecompositionMetric` reads a batch (contract 1) and a :class:`Decomposition`
(contract 2) and keeps only summable state (sums, counts, confusion matrices), so that its
value under DDP equals the single-process value and each image is counted once.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor
from torchmetrics import Metric

from objdecomp.types import Decomposition


class DecompositionMetric(Metric):
    """A torchmetrics ``Metric`` fed with ``update(batch, decomposition)``.

    ``required_keys`` names the batch keys it needs; the base module updates a metric only
    on batches that carry them. ``compute()`` returns named values (e.g. ``{"macc": …,
    "miou": …}``), logged as ``<split>/<metric name>_<value name>``, or ``<split>/<metric
    name>`` when the only value is named ``""``.
    """

    required_keys: ClassVar[Tuple[str, ...]] = ()
    needs_classes: ClassVar[bool] = False  # needs Decomposition.classes
    full_state_update = False

    def applies_to(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> bool:
        return self.unmet_need(batch, decomposition) is None

    def unmet_need(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> Optional[str]:
        """Why this metric cannot score ``batch``'s decomposition (shown as "n/a" with this
        reason, e.g. in ``results/COMPARISON.md``), or None when it can."""
        if self.needs_classes and decomposition.classes is None:
            return "the method assigns no classes"
        missing = [key for key in self.required_keys if key not in batch]
        return f"the data has no '{missing[0]}' ground truth" if missing else None

    @abstractmethod
    def update(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> None:
        """Accumulate the summable state of one batch."""

    @abstractmethod
    def compute(self) -> Dict[str, Tensor]:
        """Named scalar values from the (already DDP-synchronised) state."""


class ImageMean(Metric):
    """Mean over images of per-image values ``[B]`` (a method's own evaluation scores).

    The state is a float64 sum and an image count, reduced by summing, so the mean under DDP
    equals the single-process mean and does not depend on how images fall into batches.
    NaN values make the mean NaN: a method's score is never silently dropped.
    """

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n_images", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, values: Tensor) -> None:
        self.total += values.to(self.total).sum()
        self.n_images += values.numel()

    def compute(self) -> Tensor:
        return self.total / self.n_images
