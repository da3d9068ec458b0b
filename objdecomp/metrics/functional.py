"""Functional core of the evaluators: torch in, torch out, batched over images.

Every score is built from integer counts (a per-image contingency table, a global
confusion matrix, per-image pixel counts) obtained with one ``bincount``; floats enter only
in the final ratios, in float64. Hungarian matchings run on the small count tables with
``scipy.optimize.linear_sum_assignment`` (a loop over images, never over pixels).

Label maps are int tensors ``[B, H, W]`` (any spatial shape works: pixels are flattened), but
the maps compared must have the SAME shape: equal pixel counts are not enough (a transposed map
would be scored silently), so every entry point checks shapes (:func:`check_shapes`) and raises
``ValueError`` naming the function, the arguments and their shapes. This is the one place the
metrics receive their inputs: the metric classes call these functions.

Per-image scores that are undefined (no valid pixel, no ground-truth entity) are NaN; the
metric classes leave them out of their means and count them. An empty batch (B = 0) is
ignored: per-image functions return empty ``[0]`` results, so a metric's state does not change;
a value over no images or pixels at all (a pooled score, an accuracy) is NaN, never 0 or 1.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

# Label ids below this bound are used as they are; larger or negative ids are first
# compacted with ``torch.unique`` so that the tables stay small.
DENSE_LIMIT = 256


def check_shapes(function: str, expected: Tuple[int, ...], reference: str,
                 **tensors: Optional[Tensor]) -> None:
    """ValueError unless every given tensor (None is skipped) has the shape ``expected``, which
    the message calls ``reference`` (e.g. "the shape of target")."""
    wrong = [f"{name} {list(t.shape)}" for name, t in tensors.items()
             if t is not None and tuple(t.shape) != tuple(expected)]
    if wrong:
        raise ValueError(f"{function}: got {', '.join(wrong)}, expected {list(expected)} "
                         f"({reference}); the same number of pixels in another shape is not the "
                         "same image")


def _per_image(values: Tensor, dims: int = 1) -> Tensor:
    """``values`` with everything after the first ``dims`` dimensions flattened (also for B = 0)."""
    return values.reshape(*values.shape[:dims], math.prod(values.shape[dims:]))


def _dense_labels(labels: Tensor) -> Tuple[Tensor, Tensor]:
    """Labels mapped to ``0..n-1`` and the original id of each new label (``[n]``)."""
    if labels.numel() == 0:
        return labels, labels.new_zeros(0)
    low, high = int(labels.min()), int(labels.max())
    if low >= 0 and high < DENSE_LIMIT:
        return labels, torch.arange(high + 1, device=labels.device)
    ids, inverse = torch.unique(labels, return_inverse=True)
    return inverse, ids


def _contingency(pred: Tensor, target: Tensor,
                 valid: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Per-image contingency table ``[B, P, T]`` (int64) and the target id of each column."""
    check_shapes("contingency_table", tuple(target.shape), "the shape of target",
                 pred=pred, valid=valid)
    b = pred.shape[0]
    pred, pred_ids = _dense_labels(_per_image(pred))
    target, target_ids = _dense_labels(_per_image(target))
    p, t = len(pred_ids), len(target_ids)
    image = torch.arange(b, device=pred.device).unsqueeze(1)
    index = (image * p + pred) * t + target
    if valid is not None:  # excluded pixels go to one overflow bin, dropped below
        index = torch.where(_per_image(valid), index, b * p * t)
    counts = torch.bincount(index.flatten(), minlength=b * p * t + 1)[: b * p * t]
    return counts.view(b, p, t), target_ids


def contingency_table(pred: Tensor, target: Tensor, valid: Optional[Tensor] = None) -> Tensor:
    """``[B, P, T]`` int64: pixels of each image with predicted id p and target id t.

    Ids are compacted when negative or >= ``DENSE_LIMIT`` (then ``p``/``t`` index the sorted
    distinct ids of the whole batch); pixels where ``valid`` is false are not counted.
    """
    return _contingency(pred, target, valid)[0]


def adjusted_rand_index(pred: Tensor, target: Tensor, valid: Optional[Tensor] = None) -> Tensor:
    """Adjusted Rand index of each image (Hubert & Arabie 1985), ``[B]`` float64.

    Equal to ``sklearn.metrics.adjusted_rand_score`` on the valid pixels of each image,
    including its special case (no disagreeing pair, e.g. both partitions a single cluster,
    gives 1.0). Deliberate deviation: an image without valid pixels gives NaN (sklearn says
    1.0), so that e.g. an image without foreground does not inflate ARI-FG.

    Args:
        pred, target: int ``[B, H, W]`` label maps.
        valid: optional bool ``[B, H, W]``; ARI-FG is ``valid = target >= num_background``.
    """
    return _ari_from_table(contingency_table(pred, target, valid))


def reassign_background_to_layers(images: Tensor, segmentation: Tensor, layers: Tensor,
                                  background: Tensor, candidates: Tensor) -> Tensor:
    """DTI-Sprites' ARI-FG segmentation (Monnier et al. 2021, Sec. 4.1): every pixel predicted
    as background goes to the candidate layer whose colour at that pixel is closest (squared
    error) to the input's.

    Args:
        images: ``[B, C, H, W]``.
        segmentation: int ``[B, H, W]`` component per pixel.
        layers: ``[B, K, C, H, W]`` per-component appearance.
        background: bool ``[K]``, the background components.
        candidates: bool ``[B, K]``, the object layers a pixel may go to (DTI: the non-empty
            ones); an image without candidates keeps its segmentation.
    """
    b, c, h, w = images.shape
    k, where = len(background), "from images [B, C, H, W] and background [K]"
    check_shapes("reassign_background_to_layers", (b, h, w), where, segmentation=segmentation)
    check_shapes("reassign_background_to_layers", (b, k, c, h, w), where, layers=layers)
    check_shapes("reassign_background_to_layers", (b, k), where, candidates=candidates)
    distance = (layers.float() - images.float()[:, None]).square().sum(2)  # [B, K, H, W]
    distance = distance.masked_fill(~candidates[:, :, None, None], float("inf"))
    closest = distance.argmin(1)
    reassign = background.to(segmentation.device)[segmentation] & candidates.any(1)[:, None, None]
    return torch.where(reassign, closest, segmentation)


def frontmost_labels(alphas: Tensor, occlusion: Tensor, threshold: float = 0.5) -> Tensor:
    """DTI-Sprites' evaluation labels (its authors' code): each pixel goes to the object layer
    whose mask exceeds ``threshold`` and that no other such layer occludes under the binarised
    occlusion matrix; 0 (background) where no mask does.

    Written as the authors write it, Eq. 2 applied to layer ids with binary masks and occlusion:
    ``Σ_l l·m_l·Π_{j≠l}(1 − δ_jl m_j)``, clamped to [0, L] (a non-transitive order can leave
    several layers or none visible; the sum is then what they score).

    Args:
        alphas: ``[B, L, H, W]`` the object layers' transparencies.
        occlusion: ``[B, L, L]`` ``δ_jl``, how much layer j occludes layer l (zero diagonal).

    Returns:
        int64 ``[B, H, W]`` in ``0..L``.
    """
    b, num_layers, h, w = alphas.shape
    check_shapes("frontmost_labels", (b, num_layers, num_layers), "from alphas [B, L, H, W]",
                 occlusion=occlusion)
    masks = (alphas > threshold).to(alphas.dtype)
    delta = (occlusion > threshold).to(alphas.dtype)
    visible = masks * (1 - delta[..., None, None] * masks[:, :, None]).prod(1)  # [B, L, H, W]
    ids = torch.arange(1, num_layers + 1, device=alphas.device, dtype=alphas.dtype)
    return (visible * ids[:, None, None]).sum(1).round().clamp(0, num_layers).long()


def _ari_from_table(table: Tensor) -> Tensor:
    # Ordered pair counts, as sklearn.metrics.cluster.pair_confusion_matrix computes them;
    # exact in int64 (up to ~3e9 pixels per image), floats only for the final ratio.
    n = table.sum((1, 2))
    sum_squares = table.square().sum((1, 2))
    same_both = sum_squares - n
    same_pred_only = table.sum(2).square().sum(1) - sum_squares
    same_target_only = table.sum(1).square().sum(1) - sum_squares
    differ_both = n * n - same_pred_only - same_target_only - sum_squares
    agree = (same_pred_only == 0) & (same_target_only == 0)
    tp, fp, fn, tn = (x.double() for x in
                      (same_both, same_pred_only, same_target_only, differ_both))
    ari = 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))
    ari = torch.where(agree, torch.ones_like(ari), ari)
    return torch.where(n == 0, torch.full_like(ari, float("nan")), ari)


def _pairwise_iou(table: Tensor) -> Tensor:
    """``[B, P, T]`` float64 IoU of every predicted segment with every target entity."""
    inter = table.double()
    union = table.sum(2, keepdim=True) + table.sum(1, keepdim=True) - table
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def matched_iou(pred: Tensor, target: Tensor, num_background: int = 0,
                include_background: bool = True) -> Tensor:
    """Mean IoU of each image under the best one-to-one matching, ``[B]`` float64.

    Ground-truth entities present in the image are matched one-to-one to predicted segments
    (Hungarian, maximising the total IoU); the score is the mean over those entities, an
    unmatched entity (more entities than segments) scoring 0. NaN when no entity counts.

    Args:
        pred, target: int ``[B, H, W]``.
        num_background: number of leading target ids that are background entities.
        include_background: whether background entities are scored (their pixels always
            count in the predicted segments' areas).
    """
    table, target_ids = _contingency(pred, target)
    scored = table.sum(1) > 0
    if not include_background:
        scored &= target_ids.unsqueeze(0) >= num_background
    iou, scored = _pairwise_iou(table).cpu().numpy(), scored.cpu().numpy()
    scores = np.full(len(iou), np.nan)
    for i, (pair_iou, keep) in enumerate(zip(iou, scored)):
        if keep.any():
            candidates = pair_iou[:, keep]
            rows, cols = linear_sum_assignment(candidates, maximize=True)
            scores[i] = candidates[rows, cols].sum() / keep.sum()
    return torch.from_numpy(scores).to(pred.device)


def best_overlap_iou(masks: Tensor, target: Tensor, threshold: float = 0.04,
                     min_pixels: int = 5) -> Tensor:
    """CIS's evaluation (Yang et al. 2020, Table 1; ``Permute_IoU`` in the authors' code).

    Every ground-truth entity (background included) with at least ``min_pixels`` pixels
    takes its best IoU over the predicted masks binarised at ``> threshold``; several
    entities may pick the same mask (greedy, not one-to-one). Mean over the entities of each
    image, ``[B]`` float64; NaN for an image without such an entity (the authors' code
    asserts there is one). The binarised masks may overlap, which the IoU accounts for.

    Args:
        masks: ``[B, K, H, W]`` soft masks.
        target: int ``[B, H, W]`` entity ids.
    """
    b, k = masks.shape[:2]
    check_shapes("best_overlap_iou", (b, *masks.shape[2:]), "masks without K", target=target)
    binary = _per_image(masks > threshold, 2)
    target, target_ids = _dense_labels(_per_image(target))
    t = len(target_ids)
    cell = torch.arange(b, device=target.device).unsqueeze(1) * t + target  # (image, entity)
    # Intersections by one bincount per component: exact integer counts, no float matmul
    # that autocast could run in bf16.
    inter = torch.stack([
        torch.bincount(torch.where(binary[:, j], cell, b * t).flatten(), minlength=b * t + 1)[:-1]
        for j in range(k)], 0).view(k, b, t).transpose(0, 1)
    area_true = torch.bincount(cell.flatten(), minlength=b * t).view(b, 1, t)
    union = binary.sum(2).unsqueeze(2) + area_true - inter
    iou = inter.double() / union.clamp(min=1)
    counted = area_true.squeeze(1) >= min_pixels
    best = torch.where(counted, iou.max(1).values, iou.new_zeros(()))
    return best.sum(1) / counted.sum(1)  # 0 / 0 = NaN without a counted entity


def confusion_matrix(pred: Tensor, target: Tensor, num_pred: int, num_true: int) -> Tensor:
    """``[num_pred, num_true]`` int64 counts of (predicted id, true id) over all elements.

    Note the orientation: rows are predictions (``sklearn.metrics.confusion_matrix`` puts
    the truth in rows). Raises ``ValueError`` for ids outside ``[0, num_pred)`` /
    ``[0, num_true)``, since silently dropping or wrapping them would corrupt the scores.
    """
    check_shapes("confusion_matrix", tuple(target.shape), "the shape of target", pred=pred)
    pred, target = pred.flatten(), target.flatten()
    for name, ids, bound in (("pred", pred, num_pred), ("target", target, num_true)):
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= bound):
            raise ValueError(f"{name} ids must lie in [0, {bound}); got "
                             f"[{int(ids.min())}, {int(ids.max())}]")
    index = pred * num_true + target
    return torch.bincount(index, minlength=num_pred * num_true).view(num_pred, num_true)


def hungarian_scores(confusion: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Mean accuracy and mean IoU under the best one-to-one mapping of predictions to classes.

    DTI-Sprites (Monnier et al. 2021, appendix A; ``SegmentationScores`` in their code): one
    global confusion matrix, a Hungarian mapping maximising the number of correctly labelled
    elements, then per-class accuracy (recall) and IoU averaged over *all* classes
    (background included; a class absent from the data, or left unmapped, scores 0).
    Unmapped predicted ids count as errors. Empty prediction rows are dropped before the
    matching (they can only score 0), so a fixed, generous row cap costs nothing.

    Args:
        confusion: ``[P, C]`` counts, rows = predicted ids, columns = true classes.

    Returns:
        ``(macc, miou, mapping)``: float64 scalars (NaN for an empty matrix) and ``[C]``
        int64, the predicted id mapped to each class (-1 if none or if the pair never occurs).
    """
    counts = confusion.detach().double().cpu()
    rows = torch.nonzero(counts.sum(1) > 0).flatten()
    used = counts[rows].numpy()
    pred_idx, classes = linear_sum_assignment(used, maximize=True)
    useful = used[pred_idx, classes] > 0  # a zero-count pair is no mapping (scores 0 either way)
    pred_idx, classes = pred_idx[useful], classes[useful]
    num_classes = counts.shape[1]
    mapping = torch.full((num_classes,), -1, dtype=torch.int64)
    mapping[classes] = rows[pred_idx]
    correct, predicted = torch.zeros(2, num_classes, dtype=torch.float64)
    correct[classes] = torch.from_numpy(used[pred_idx, classes])
    predicted[classes] = torch.from_numpy(used[pred_idx].sum(1))
    true = counts.sum(0)
    acc = torch.where(true > 0, correct / true.clamp(min=1), torch.zeros_like(true))
    union = predicted + true - correct
    iou = torch.where(union > 0, correct / union.clamp(min=1), torch.zeros_like(union))
    scores = torch.stack([acc.mean(), iou.mean()]) if counts.sum() else torch.full((2,), np.nan)
    macc, miou = scores.double().to(confusion.device)
    return macc, miou, mapping.to(confusion.device)


def matched_accuracy(confusion: Tensor) -> Tensor:
    """Fraction of elements labelled correctly under :func:`hungarian_scores`' mapping."""
    mapping = hungarian_scores(confusion)[2].cpu()
    counts = confusion.detach().double().cpu()
    mapped = mapping >= 0
    correct = counts[mapping[mapped], torch.nonzero(mapped).flatten()].sum()
    return (correct / counts.sum()).to(confusion.device)


def cluster_accuracy(pred_labels: Tensor, true_labels: Tensor) -> Tensor:
    """Clustering accuracy with a one-to-one Hungarian cluster-to-class mapping (float64).

    DTI-Sprites' Table 3 protocol. Deliberate deviation: their code falls back to a
    many-to-one majority mapping when the number of clusters differs from the number of
    classes; here the mapping is always one-to-one and surplus clusters count as errors.
    """
    check_shapes("cluster_accuracy", tuple(true_labels.shape), "the shape of true_labels",
                 pred_labels=pred_labels)
    pred, pred_ids = _dense_labels(pred_labels.flatten())
    true, true_ids = _dense_labels(true_labels.flatten())
    confusion = confusion_matrix(pred, true, len(pred_ids), len(true_ids))
    return matched_accuracy(confusion)


def foreground_counts(pred_fg: Tensor, target_fg: Tensor) -> Tensor:
    """``[B, 4]`` int64 per image: (true positives, predicted, true, pixels) foreground counts."""
    check_shapes("foreground_counts", tuple(target_fg.shape), "the shape of target_fg",
                 pred_fg=pred_fg)
    pred, true = _per_image(pred_fg), _per_image(target_fg)
    return torch.stack([(pred & true).sum(1), pred.sum(1), true.sum(1),
                        torch.full_like(pred[:, 0], pred.shape[1], dtype=torch.int64)], 1)


def foreground_scores_from_counts(counts: Tensor) -> Tuple[Tensor, Tensor]:
    """(accuracy, IoU) float64 from :func:`foreground_counts` (``[..., 4]``, summable)."""
    tp, pred, true, n = counts.double().unbind(-1)
    acc = (n - pred - true + 2 * tp) / n
    union = pred + true - tp
    # Empty prediction and empty truth agree perfectly: IoU 1 (e.g. PerturbGAN's "all"
    # setting scores images without a car against an empty mask); no pixel at all: NaN.
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.ones_like(union))
    return acc, torch.where(n > 0, iou, torch.full_like(iou, float("nan")))


def foreground_scores(pred_fg: Tensor, target_fg: Tensor,
                      pooled: bool = False) -> Tuple[Tensor, Tensor]:
    """Foreground/background pixel accuracy and foreground IoU.

    Args:
        pred_fg, target_fg: bool ``[B, H, W]``.
        pooled: False gives per-image scores ``[B]``; True pools the pixels of all images
            into one confusion (scalars).
    """
    counts = foreground_counts(pred_fg.bool(), target_fg.bool())
    return foreground_scores_from_counts(counts.sum(0) if pooled else counts)


def matched_foreground_accuracy(counts: Tensor) -> Tensor:
    """Pixel accuracy under one Hungarian match of the fg/bg 2×2 confusion matrix pooled over
    a dataset (DTI-Sprites' Table 4, as its authors' code scores it): the better of the fixed
    roles and the swapped ones, for all images at once. ``counts``: ``[..., 4]`` summed
    :func:`foreground_counts`; NaN without pixels.
    """
    tp, pred, true, n = counts.double().unbind(-1)
    agree = n - pred - true + 2 * tp
    best = torch.maximum(agree, n - agree)
    return torch.where(n > 0, best / n.clamp(min=1), torch.full_like(n, float("nan")))


def region_foreground_scores(segmentation: Tensor, target_fg: Tensor,
                             num_regions: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Accuracy and IoU of every candidate region permutation, ``[B, 2, R]`` each.

    The building block of ReDO's evaluation. Candidate ``[:, 0, r]``: region r is the
    foreground; ``[:, 1, r]``: region r is the background and all others the foreground.
    With two regions these are ReDO's mask and its complement (each twice). Deliberate
    generalisation for R > 2 (ReDO only evaluates two regions): one object region, or one
    background region, rather than all 2^R splits of the regions.

    Args:
        segmentation: int ``[B, H, W]`` region ids in ``[0, num_regions)``.
        target_fg: bool ``[B, H, W]``.
        num_regions: R, the number of components (default: the largest id + 1).
    """
    check_shapes("region_foreground_scores", tuple(target_fg.shape), "the shape of target_fg",
                 segmentation=segmentation)
    b = segmentation.shape[0]
    if num_regions is None:  # without any pixel: one region, so that the tables keep a column
        num_regions = int(segmentation.max()) + 1 if segmentation.numel() else 1
    r = num_regions
    seg, true = _per_image(segmentation), _per_image(target_fg).bool()
    cell = torch.arange(b, device=seg.device).unsqueeze(1) * r + seg
    pred = torch.bincount(cell.flatten(), minlength=b * r).view(b, r)
    tp = torch.bincount(cell[true], minlength=b * r).view(b, r)
    true_area, n = true.sum(1, keepdim=True).expand(b, r), torch.full_like(pred, seg.shape[1])
    region_is_fg = torch.stack([tp, pred, true_area, n], -1)
    region_is_bg = torch.stack([true_area - tp, n - pred, true_area, n], -1)
    return foreground_scores_from_counts(torch.stack([region_is_fg, region_is_bg], 1))


def best_permutation_foreground_scores(segmentation: Tensor, target_fg: Tensor,
                                       num_regions: Optional[int] = None
                                       ) -> Tuple[Tensor, Tensor]:
    """ReDO's protocol (Chen et al. 2019, Table 1; ``mickaelChen/ReDO``): per image, accuracy
    and IoU each take their best region permutation, chosen independently, ``[B]`` each.

    Pass ``num_regions`` (the number of components K) so that a region absent from the
    whole batch still counts as a candidate."""
    acc, iou = region_foreground_scores(segmentation, target_fg, num_regions)
    return acc.flatten(1).max(1).values, iou.flatten(1).max(1).values


def dataset_permutation_foreground_scores(segmentation: Tensor, target_fg: Tensor,
                                          num_regions: Optional[int] = None
                                          ) -> Tuple[Tensor, Tensor, Tensor]:
    """The per-dataset variant: one region permutation for every image, the one with the
    best mean IoU over the given images.

    Returns:
        Per-image ``(acc, iou)`` under that permutation, and ``[R]`` bool: which regions it
        calls foreground.
    """
    acc, iou = region_foreground_scores(segmentation, target_fg, num_regions)
    role, region = best_candidate(iou.sum(0))
    foreground = torch.arange(acc.shape[-1], device=acc.device) == region
    return acc[:, role, region], iou[:, role, region], foreground if role == 0 else ~foreground


def best_candidate(iou_total: Tensor) -> Tuple[int, int]:
    """``(role, region)`` of the largest entry of a ``[2, R]`` table of summed IoUs laid out
    as :func:`region_foreground_scores` (role 0: region is foreground, 1: is background)."""
    role, region = divmod(int(iou_total.flatten().argmax()), iou_total.shape[1])
    return role, region


def count_accuracy(pred_count: Tensor, true_count: Tensor) -> Tensor:
    """Fraction of images whose predicted object count is exact (float64 scalar; NaN for none)."""
    check_shapes("count_accuracy", tuple(true_count.shape), "the shape of true_count",
                 pred_count=pred_count)
    return (pred_count == true_count).double().mean()
