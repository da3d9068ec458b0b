"""Evaluators of object decompositions (DESIGN.md, "Evaluation and results").

:func:`build_metrics` gives the metrics a dataset's facts allow; each is updated only on
batches carrying its ground truth (:meth:`DecompositionMetric.applies_to`). The functional
core, with the exact definitions and their sources, is :mod:`objdecomp.metrics.functional`.
"""

from __future__ import annotations

from typing import Dict

from objdecomp.metrics.base import DecompositionMetric, ImageMean
from objdecomp.metrics.clustering import ClusterAccuracy, CountAccuracy, SemanticSegmentation
from objdecomp.metrics.segmentation import (ARI, ARIFG, ARIFGDTI, BestOverlapIoU,
                                            BestPermutationForeground, ForegroundSegmentation,
                                            MatchedForegroundAccuracy, MatchedIoU, PerImageMean)

__all__ = ["ARI", "ARIFG", "ARIFGDTI", "BestOverlapIoU", "BestPermutationForeground",
           "ClusterAccuracy", "CountAccuracy", "DecompositionMetric", "ForegroundSegmentation",
           "ImageMean", "MatchedForegroundAccuracy", "MatchedIoU", "PerImageMean",
           "SemanticSegmentation", "build_metrics"]


def build_metrics(num_classes: int, num_background: int,
                  max_objects: int) -> Dict[str, DecompositionMetric]:
    """The metrics that can apply to a dataset with these facts, keyed by their log names.

    Args:
        num_classes: semantic classes including background (0: no semantic ground truth).
        num_background: leading ``mask`` ids that are background entities.
        max_objects: most objects in an image (1: single-object sets, scored as ReDO does).
    """
    metrics: Dict[str, DecompositionMetric] = {
        "ari": ARI(),
        "matched_miou": MatchedIoU(num_background, include_background=True),
        "best_overlap_miou": BestOverlapIoU(),
        "cluster": ClusterAccuracy(),
        "count": CountAccuracy(),
    }
    if num_background > 0:  # without background entities these equal ARI / a constant
        metrics["ari_fg"] = ARIFG(num_background)
        metrics["ari_fg_dti"] = ARIFGDTI(num_background)  # methods whose decomposition has layers
        metrics["fg"] = ForegroundSegmentation(num_background)
        if max_objects == 1:
            metrics["fg_best"] = BestPermutationForeground(num_background)
            metrics["fg_global"] = MatchedForegroundAccuracy(num_background)  # DTI's Table 4
    if num_classes > 0:
        metrics["semantic"] = SemanticSegmentation(num_classes)
    return metrics
