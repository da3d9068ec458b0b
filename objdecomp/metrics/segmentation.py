"""Instance and foreground segmentation metrics (torchmetrics, summable state only).

Per-image scores are averaged over images, not pooled over pixels (torchmetrics' own
``AdjustedRandScore`` pools all pixels of all images, which is not the object-centric
literature's ARI). Every state is a sum or a count reduced with
``dist_reduce_fx="sum"``, in float64 or int64, so that DDP equals one process and each image
is counted once (``n_images``).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Dict, Mapping, Optional

import torch
from torch import Tensor

from objdecomp.metrics import functional as F
from objdecomp.metrics.base import DecompositionMetric
from objdecomp.types import Decomposition

# Fixed length of the per-region state of BestPermutationForeground (states must have the
# same shape on every rank, whatever each rank has seen).
MAX_REGIONS = 64


def _sum_state(metric: DecompositionMetric, name: str, shape=(), dtype=torch.float64) -> None:
    metric.add_state(name, torch.zeros(shape, dtype=dtype), dist_reduce_fx="sum")


def _foreground(batch: Mapping[str, Tensor], num_background: int) -> Tensor:
    return batch["mask"] >= num_background


class PerImageMean(DecompositionMetric):
    """Mean over images of a per-image score; undefined (NaN) images are counted, not averaged.

    ``compute()`` gives ``{"": mean}``, plus ``"n_undefined"`` (the number of NaN images) for
    scores that can be undefined; the count is kept as state in every case.
    """

    required_keys = ("mask",)
    higher_is_better = True
    can_be_undefined = True  # False where the definition excludes NaN (compact logs)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        _sum_state(self, "total")
        _sum_state(self, "n_images", dtype=torch.int64)
        _sum_state(self, "n_undefined", dtype=torch.int64)

    @abstractmethod
    def scores(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> Tensor:
        """``[B]`` per-image scores, NaN where undefined."""

    def update(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> None:
        scores = self.scores(batch, decomposition).to(self.total.device)
        undefined = scores.isnan()
        self.total += torch.where(undefined, torch.zeros_like(scores), scores).sum()
        self.n_images += scores.numel()
        self.n_undefined += undefined.sum()

    def compute(self) -> Dict[str, Tensor]:
        values = {"": self.total / (self.n_images - self.n_undefined)}
        if self.can_be_undefined:
            values["n_undefined"] = self.n_undefined.double()
        return values


class ARI(PerImageMean):
    """Adjusted Rand index of the argmax segmentation against ``mask``, over all pixels."""

    can_be_undefined = False  # every image has pixels

    def scores(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> Tensor:
        return F.adjusted_rand_index(decomposition.segmentation(), batch["mask"])


class ARIFG(PerImageMean):
    """ARI over the ground-truth foreground pixels (``mask >= num_background``).

    All background entities are excluded, not only id 0 (Objects Room has four), and an
    image without foreground is undefined rather than a perfect 1.0 (which would inflate the
    mean on sets with empty scenes). DTI-Sprites' variant, which first
    reassigns pixels predicted as background to an object layer, is :class:`ARIFGDTI`.
    """

    def __init__(self, num_background: int = 1, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_background = num_background

    def scores(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> Tensor:
        return F.adjusted_rand_index(decomposition.segmentation(), batch["mask"],
                                     valid=_foreground(batch, self.num_background))


class ARIFGDTI(PerImageMean):
    """ARI-FG as DTI-Sprites scores it (Sec. 4.1): pixels predicted as background are first
    reassigned to the object layer whose colour is closest to the input's
    (:func:`functional.reassign_background_to_layers`), then ARI over the ground-truth
    foreground. As in the authors' code, every object layer competes, those holding the empty
    sprite too. Needs ``layers``; object layers are the non-background components.
    """

    def __init__(self, num_background: int = 1, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_background = num_background

    def unmet_need(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> Optional[str]:
        if decomposition.layers is None:
            return "the decomposition has no layers"
        return super().unmet_need(batch, decomposition)

    def scores(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> Tensor:
        background = decomposition.background
        candidates = ~background.to(decomposition.masks.device).expand(decomposition.masks.shape[:2])
        segmentation = F.reassign_background_to_layers(
            batch["image"], decomposition.segmentation(), decomposition.layers, background, candidates)
        return F.adjusted_rand_index(segmentation, batch["mask"],
                                     valid=_foreground(batch, self.num_background))


class MatchedIoU(PerImageMean):
    """Mean IoU per image under the one-to-one Hungarian matching of entities to segments."""

    def __init__(self, num_background: int = 1, include_background: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_background, self.include_background = num_background, include_background
        self.can_be_undefined = not include_background  # an image without foreground

    def scores(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> Tensor:
        return F.matched_iou(decomposition.segmentation(), batch["mask"],
                             self.num_background, self.include_background)


class BestOverlapIoU(PerImageMean):
    """CIS's mIoU protocol on the soft masks (see :func:`functional.best_overlap_iou`)."""

    def __init__(self, threshold: float = 0.04, min_pixels: int = 5, **kwargs: Any):
        super().__init__(**kwargs)
        self.threshold, self.min_pixels = threshold, min_pixels

    def scores(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> Tensor:
        return F.best_overlap_iou(decomposition.masks, batch["mask"], self.threshold,
                                  self.min_pixels)


class ForegroundSegmentation(DecompositionMetric):
    """Foreground/background accuracy and IoU; predicted foreground = pixels whose argmax
    component is not a background component.

    ``compute()``: ``acc`` and ``iou`` averaged over images, and ``iou_pooled`` over all pixels
    (pooled accuracy equals the image mean when images have equal size, so it is not repeated).
    """

    required_keys = ("mask",)
    higher_is_better = True

    def __init__(self, num_background: int = 1, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_background = num_background
        _sum_state(self, "acc_total")
        _sum_state(self, "iou_total")
        _sum_state(self, "n_images", dtype=torch.int64)
        _sum_state(self, "pooled_counts", shape=(4,), dtype=torch.int64)

    def update(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> None:
        background = decomposition.background.to(batch["mask"].device)
        pred_fg = ~background[decomposition.segmentation()]
        counts = F.foreground_counts(pred_fg, _foreground(batch, self.num_background))
        acc, iou = F.foreground_scores_from_counts(counts)
        self.acc_total += acc.sum()
        self.iou_total += iou.sum()
        self.n_images += len(counts)
        self.pooled_counts += counts.sum(0)

    def compute(self) -> Dict[str, Tensor]:
        return {"acc": self.acc_total / self.n_images, "iou": self.iou_total / self.n_images,
                "iou_pooled": F.foreground_scores_from_counts(self.pooled_counts)[1]}


class MatchedForegroundAccuracy(DecompositionMetric):
    """DTI-Sprites' Table 4 (Weizmann Horse) accuracy: one 2×2 fg/bg confusion matrix over the
    whole split and one Hungarian match of its roles (:func:`functional.matched_foreground_accuracy`);
    predicted foreground as :class:`ForegroundSegmentation`. Logged as ``<split>/fg_global``.
    """

    required_keys = ("mask",)
    higher_is_better = True

    def __init__(self, num_background: int = 1, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_background = num_background
        _sum_state(self, "pooled_counts", shape=(4,), dtype=torch.int64)

    def update(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> None:
        background = decomposition.background.to(batch["mask"].device)
        pred_fg = ~background[decomposition.segmentation()]
        self.pooled_counts += F.foreground_counts(pred_fg, _foreground(batch, self.num_background)).sum(0)

    def compute(self) -> Dict[str, Tensor]:
        return {"": F.matched_foreground_accuracy(self.pooled_counts)}


class BestPermutationForeground(DecompositionMetric):
    """ReDO's evaluation: the region permutation that matches the ground truth best.

    ``acc``/``iou``: chosen per image, each independently, as the authors' evaluation
    code does; ``acc_dataset``/``iou_dataset``: one permutation for every image, the
    one with the best mean IoU (a stricter variant reported beside it). Candidates as in
    :func:`functional.region_foreground_scores`.
    """

    required_keys = ("mask",)
    higher_is_better = True

    def __init__(self, num_background: int = 1, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_background = num_background
        _sum_state(self, "acc_total")
        _sum_state(self, "iou_total")
        _sum_state(self, "n_images", dtype=torch.int64)
        _sum_state(self, "candidate_acc_total", shape=(2, MAX_REGIONS))
        _sum_state(self, "candidate_iou_total", shape=(2, MAX_REGIONS))

    def update(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> None:
        k = decomposition.num_components
        if k > MAX_REGIONS:
            raise ValueError(f"at most {MAX_REGIONS} components are supported, got {k}")
        acc, iou = F.region_foreground_scores(decomposition.segmentation(),
                                              _foreground(batch, self.num_background), k)
        self.acc_total += acc.flatten(1).max(1).values.sum()
        self.iou_total += iou.flatten(1).max(1).values.sum()
        self.n_images += len(acc)
        self.candidate_acc_total[:, :k] += acc.sum(0)
        self.candidate_iou_total[:, :k] += iou.sum(0)

    def compute(self) -> Dict[str, Tensor]:
        # Padding candidates (regions >= K) have zero sums; with nothing better (all IoUs 0)
        # argmax picks the first, a real one.
        role, region = F.best_candidate(self.candidate_iou_total)
        return {"acc": self.acc_total / self.n_images, "iou": self.iou_total / self.n_images,
                "acc_dataset": self.candidate_acc_total[role, region] / self.n_images,
                "iou_dataset": self.candidate_iou_total[role, region] / self.n_images}
