"""Class-level metrics: semantic segmentation, clustering accuracy, count accuracy.

The state is a global confusion matrix of FIXED shape (a generous cap on the predicted-id
axis, since prototype ids are only known once seen): every rank holds the same shape
whatever it has seen, the matrices sum exactly across ranks, and empty rows are dropped
before the Hungarian matching (:func:`functional.hungarian_scores`).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
from torch import Tensor

from objdecomp.metrics import functional as F
from objdecomp.metrics.base import DecompositionMetric
from objdecomp.types import Decomposition

# Cap on predicted ids (prototype / cluster ids) and, for image labels, on true ids.
MAX_IDS = 256


class SemanticSegmentation(DecompositionMetric):
    """mACC and mIoU of ``decomposition.semantic_segmentation()`` against ``semantic``.

    DTI-Sprites' protocol (appendix A): one confusion matrix over the whole split, Hungarian
    mapping of prototypes to classes, per-class scores averaged over all ``num_classes``
    classes, background included.
    """

    required_keys = ("semantic",)
    needs_classes = True
    higher_is_better = True

    def __init__(self, num_classes: int, max_pred_ids: int = MAX_IDS, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_classes, self.max_pred_ids = num_classes, max_pred_ids
        self.add_state("confusion", torch.zeros(max_pred_ids, num_classes, dtype=torch.int64),
                       dist_reduce_fx="sum")

    def update(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> None:
        self.confusion += F.confusion_matrix(decomposition.semantic_segmentation(),
                                             batch["semantic"], self.max_pred_ids,
                                             self.num_classes)

    def compute(self) -> Dict[str, Tensor]:
        macc, miou, _ = F.hungarian_scores(self.confusion)
        return {"macc": macc, "miou": miou}


def predicted_cluster(decomposition: Decomposition) -> Tensor:
    """``[B]`` the class of the first non-background component (of component 0 when every
    component is background): the cluster of a single-object image."""
    foreground = torch.nonzero(~decomposition.background).flatten()
    component = int(foreground[0]) if len(foreground) else 0
    return decomposition.classes[:, component]


class ClusterAccuracy(DecompositionMetric):
    """Clustering accuracy of image ``label`` (DTI-Sprites Table 3): the fraction of images
    whose cluster maps to their label under the Hungarian cluster-to-class mapping."""

    required_keys = ("label",)
    needs_classes = True
    higher_is_better = True

    def __init__(self, max_ids: int = MAX_IDS, **kwargs: Any):
        super().__init__(**kwargs)
        self.max_ids = max_ids
        self.add_state("confusion", torch.zeros(max_ids, max_ids, dtype=torch.int64),
                       dist_reduce_fx="sum")

    def update(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> None:
        self.confusion += F.confusion_matrix(predicted_cluster(decomposition), batch["label"],
                                             self.max_ids, self.max_ids)

    def compute(self) -> Dict[str, Tensor]:
        return {"": F.matched_accuracy(self.confusion)}


class CountAccuracy(DecompositionMetric):
    """Fraction of images whose predicted object count equals ``count`` (LAVAE, Table 1)."""

    required_keys = ("count",)
    higher_is_better = True

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.add_state("correct", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("n_images", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def unmet_need(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> Optional[str]:
        if decomposition.count is None:
            return "the method does not count objects"
        return super().unmet_need(batch, decomposition)

    def update(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> None:
        F.check_shapes("CountAccuracy", tuple(batch["count"].shape), "the batch's count",
                       count=decomposition.count)
        self.correct += (decomposition.count == batch["count"]).sum()
        self.n_images += len(batch["count"])

    def compute(self) -> Dict[str, Tensor]:
        return {"": self.correct / self.n_images.double()}
