"""Metrics check what they are given (issue #15, item 8).

Maps of different shapes are an error even when they hold the same number of pixels (a
transposed mask used to be scored silently), counts of different lengths are not broadcast,
and an empty batch is ignored: per-image functions return ``[0]``, metric states do not change,
and a value over no image at all is NaN everywhere (never 1.0 or 0).
"""

from __future__ import annotations

import math

import pytest
import torch

from objdecomp.metrics import build_metrics
from objdecomp.metrics import functional as F
from tests.test_metrics_classes import feed, make_batch

B, H, W = 2, 4, 8


def _labels(shape, seed=0, high=3):
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(seed))


def _transposed_pair():
    return _labels((B, H, W)), _labels((B, W, H), seed=1)  # same pixel count, other shape


SAME_PIXELS_OTHER_SHAPE = {
    "adjusted_rand_index": lambda p, t: F.adjusted_rand_index(p, t),
    "ari_fg valid": lambda p, t: F.adjusted_rand_index(t, t, valid=p > 0),
    "matched_iou": lambda p, t: F.matched_iou(p, t, 1),
    "best_overlap_iou": lambda p, t: F.best_overlap_iou(torch.rand(B, 3, H, W), t),
    "confusion_matrix": lambda p, t: F.confusion_matrix(p, t, 3, 3),
    "foreground_scores": lambda p, t: F.foreground_scores(p > 0, t > 0),
    "best_permutation_foreground_scores": lambda p, t: F.best_permutation_foreground_scores(p, t > 0, 3),
}


@pytest.mark.parametrize("name", list(SAME_PIXELS_OTHER_SHAPE))
def test_maps_of_another_shape_are_an_error_naming_both_shapes(name):
    pred, target = _transposed_pair()
    with pytest.raises(ValueError, match=r": got \w+ \[2, (4, 8|8, 4)\], expected \[2, (8, 4|4, 8)\]"):
        SAME_PIXELS_OTHER_SHAPE[name](pred, target)


def test_counts_and_labels_of_other_lengths_are_not_broadcast():
    with pytest.raises(ValueError, match=r"count_accuracy: got pred_count \[3\], expected \[1\]"):
        F.count_accuracy(torch.tensor([1, 1, 1]), torch.tensor([1]))  # was 1.0 by broadcasting
    with pytest.raises(ValueError, match="cluster_accuracy"):
        F.cluster_accuracy(torch.tensor([0, 1, 1, 0]), torch.tensor([[0, 1], [1, 0]]))


def test_metric_classes_reject_a_transposed_mask_and_mismatched_counts():
    batch, decomposition = make_batch(2, size=8)
    metrics = build_metrics(num_classes=3, num_background=1, max_objects=1)
    wrong = dict(batch, mask=batch["mask"].reshape(2, 4, 16), semantic=batch["semantic"].reshape(2, 16, 4))
    for name in ("ari", "ari_fg", "matched_miou", "best_overlap_miou", "fg", "fg_best", "semantic"):
        with pytest.raises(ValueError, match=r"\[2, 8, 8\]"):
            metrics[name].update(wrong, decomposition)
    counts = dict(batch, count=batch["count"][:1])
    with pytest.raises(ValueError, match=r"CountAccuracy: got count \[2\], expected \[1\]"):
        metrics["count"].update(counts, decomposition)


# --- empty batches ---------------------------------------------------------------------------
def test_per_image_functions_return_nothing_for_an_empty_batch():
    empty = torch.zeros(0, H, W, dtype=torch.int64)
    for scores in (F.adjusted_rand_index(empty, empty), F.adjusted_rand_index(empty, empty, empty > 0),
                   F.matched_iou(empty, empty, 1), F.best_overlap_iou(torch.zeros(0, 3, H, W), empty),
                   *F.foreground_scores(empty > 0, empty > 0),
                   *F.best_permutation_foreground_scores(empty, empty > 0, 2),
                   *F.best_permutation_foreground_scores(empty, empty > 0)):
        assert scores.shape == (0,)


def test_values_over_no_image_are_nan_everywhere():
    empty = torch.zeros(0, H, W, dtype=torch.int64)
    nothing = torch.zeros(0, dtype=torch.int64)
    values = [*F.foreground_scores(empty > 0, empty > 0, pooled=True),  # IoU was 1.0, accuracy NaN
              F.count_accuracy(nothing, nothing), F.cluster_accuracy(nothing, nothing),
              *F.hungarian_scores(F.confusion_matrix(empty, empty, 3, 3))[:2]]
    assert all(math.isnan(v.item()) for v in values), values


def test_an_empty_batch_leaves_every_metric_unchanged():
    batch, decomposition = make_batch(6, seed=3)
    for name, metric in build_metrics(num_classes=3, num_background=1, max_objects=1).items():
        plain = feed(metric, batch, decomposition, (2, 4))
        metric.reset()
        with_empty = feed(metric, batch, decomposition, (2, 0, 4, 0))
        assert plain.keys() == with_empty.keys(), name
        for key, value in plain.items():
            assert torch.equal(value, with_empty[key]) or (value.isnan() & with_empty[key].isnan()), (name, key)


def test_a_metric_that_saw_only_empty_batches_is_nan():
    batch, decomposition = make_batch(3)
    for name, metric in build_metrics(num_classes=3, num_background=1, max_objects=1).items():
        values = feed(metric, batch, decomposition, (0,))
        assert all(math.isnan(v.item()) for key, v in values.items() if key != "n_undefined"), (name, values)
