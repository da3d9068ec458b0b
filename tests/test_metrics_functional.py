"""The functional core against sklearn / scipy oracles, structured cases and hand computations."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from objdecomp.metrics import functional as F


def labels(shape, high, seed):
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(seed))


def sklearn_ari(pred, target, valid=None):
    out = []
    for i in range(len(pred)):
        keep = np.ones(pred[i].numel(), bool) if valid is None else valid[i].flatten().numpy()
        out.append(adjusted_rand_score(target[i].flatten().numpy()[keep],
                                       pred[i].flatten().numpy()[keep]))
    return np.array(out)


# --- ARI ------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,k_pred,k_true,size", [(0, 2, 2, 4), (1, 7, 5, 16), (2, 3, 9, 9),
                                                     (3, 12, 2, 32), (4, 1, 4, 8)])
def test_ari_equals_sklearn_on_random_labelings(seed, k_pred, k_true, size):
    pred, target = labels((6, size, size), k_pred, seed), labels((6, size, size), k_true, seed + 99)
    np.testing.assert_allclose(F.adjusted_rand_index(pred, target).numpy(),
                               sklearn_ari(pred, target), rtol=0, atol=1e-12)
    valid = labels((6, size, size), 3, seed + 7) > 0
    np.testing.assert_allclose(F.adjusted_rand_index(pred, target, valid).numpy(),
                               sklearn_ari(pred, target, valid), rtol=0, atol=1e-12)


def test_ari_structured_cases_match_sklearn():
    target = torch.tensor([[0, 0, 1, 1, 2, 2, 2, 3]])
    cases = {
        "permuted labels": torch.tensor([[5, 5, 0, 0, 9, 9, 9, 1]]),
        "split segment": torch.tensor([[0, 0, 1, 1, 2, 2, 4, 3]]),
        "merged segments": torch.tensor([[0, 0, 0, 0, 2, 2, 2, 3]]),
        "single predicted cluster": torch.zeros(1, 8, dtype=torch.long),
        "all singletons": torch.arange(8).view(1, 8),
        "huge and negative ids": torch.tensor([[-7, -7, 10**9, 10**9, 3, 3, 3, 300]]),
    }
    for name, pred in cases.items():
        got = F.adjusted_rand_index(pred, target).item()
        assert got == pytest.approx(sklearn_ari(pred, target)[0], abs=1e-12), name
    assert F.adjusted_rand_index(cases["permuted labels"], target).item() == 1.0


def test_ari_special_cases():
    one = torch.zeros(1, 3, 3, dtype=torch.long)
    assert F.adjusted_rand_index(one, one).item() == 1.0  # both a single cluster
    assert F.adjusted_rand_index(one[:, :1, :1], one[:, :1, :1] + 4).item() == 1.0  # one pixel
    singletons = torch.arange(9).view(1, 3, 3)
    assert F.adjusted_rand_index(singletons, singletons + 1).item() == 1.0
    # No valid pixel (all background under ARI-FG): NaN, where sklearn says 1.0 on empty input.
    assert math.isnan(F.adjusted_rand_index(one, one, valid=one > 0).item())


def test_ari_hand_computed():
    # Hubert & Arabie: index 1, expected 2*1/6 = 1/3, max (1+2)/2 -> (1 - 1/3) / (3/2 - 1/3) = 4/7.
    got = F.adjusted_rand_index(torch.tensor([[0, 0, 1, 1]]), torch.tensor([[0, 0, 1, 2]]))
    assert got.item() == pytest.approx(4 / 7, abs=1e-15)
    # index 1, expected 3*2/6 = 1, max 5/2 -> ARI 0.
    got = F.adjusted_rand_index(torch.tensor([[0, 0, 1, 1]]), torch.tensor([[0, 0, 0, 1]]))
    assert got.item() == pytest.approx(0.0, abs=1e-15)


def test_ari_fg_excludes_every_background_entity():
    # Objects Room: ids 0..3 are sky, floor and walls; a prediction that is only wrong there
    # is perfect under ARI-FG with num_background=4 (and not with "drop id 0").
    target = torch.tensor([[0, 1, 2, 3, 4, 4, 5, 5]])
    pred = torch.tensor([[7, 7, 7, 7, 1, 1, 2, 2]])
    assert F.adjusted_rand_index(pred, target, valid=target >= 4).item() == 1.0
    assert F.adjusted_rand_index(pred, target, valid=target >= 1).item() < 1.0


def test_ari_fg_of_a_single_perfect_object_is_one():
    # DeepMind's segmentation_metrics gives NaN here (0 / 0); sklearn gives 1.0.
    target = torch.tensor([[0, 0, 1, 1, 1]])
    assert F.adjusted_rand_index(torch.tensor([[3, 3, 5, 5, 5]]), target, target >= 1).item() == 1.0
    split = torch.tensor([[3, 3, 5, 5, 6]])
    assert F.adjusted_rand_index(split, target, target >= 1).item() == pytest.approx(
        adjusted_rand_score([1, 1, 1], [5, 5, 6]), abs=1e-15)


# --- matched IoU ----------------------------------------------------------------------------
def brute_force_matched_iou(pred, target, scored_ids):
    p_ids = np.unique(pred)
    iou = np.array([[np.sum((pred == p) & (target == t)) / np.sum((pred == p) | (target == t))
                     for t in scored_ids] for p in p_ids])
    best = 0.0
    for perm in itertools.permutations(range(max(len(p_ids), len(scored_ids))), len(scored_ids)):
        best = max(best, sum(iou[p, j] for j, p in enumerate(perm) if p < len(p_ids)))
    return best / len(scored_ids)


@pytest.mark.parametrize("seed", range(4))
def test_matched_iou_equals_exhaustive_matching(seed):
    pred, target = labels((3, 6, 6), 2 + seed, seed), labels((3, 6, 6), 5 - seed % 2, seed + 50)
    for include_background in (True, False):
        got = F.matched_iou(pred, target, num_background=1, include_background=include_background)
        for i in range(3):
            t, p = target[i].numpy(), pred[i].numpy()
            ids = [u for u in np.unique(t) if include_background or u >= 1]
            assert got[i].item() == pytest.approx(brute_force_matched_iou(p, t, ids), abs=1e-12)


def test_matched_iou_hand_cases():
    target = torch.tensor([[0, 0, 1, 1, 2, 2]])
    # One predicted segment for three entities: the best entity (IoU 1/3 each) is matched,
    # the other two score 0 -> (1/3) / 3.
    assert F.matched_iou(torch.zeros_like(target), target).item() == pytest.approx(1 / 9)
    assert F.matched_iou(target + 5, target).item() == 1.0  # relabelled perfect prediction
    # K larger than the number of segments: extra predicted ids change nothing.
    split = torch.tensor([[0, 3, 1, 1, 2, 2]])
    assert F.matched_iou(split, target).item() == pytest.approx((0.5 + 1 + 1) / 3)
    # Ties (two equally good matchings) have one optimal value.
    tie_t, tie_p = torch.tensor([[0, 1]]), torch.tensor([[0, 0]])
    assert F.matched_iou(tie_p, tie_t).item() == pytest.approx(0.25)
    # Foreground only, image without foreground: undefined.
    assert math.isnan(F.matched_iou(tie_p, torch.zeros_like(tie_t), 1, False).item())


# --- CIS best-overlap IoU -------------------------------------------------------------------
def permute_iou_reference(label_masks, pred_masks):
    """The authors' ``Permute_IoU`` transcribed in numpy: entity masks [N, H, W], soft [K, H, W]."""
    total, counted = 0.0, 0
    for src in label_masks > 0.04:
        if src.sum() > 4:
            trg = pred_masks > 0.04
            inter = (src[None] & trg).sum((1, 2))
            union = (src[None] | trg).sum((1, 2))
            total, counted = total + np.max(inter / (1e-8 + union)), counted + 1
    return total / counted


def test_best_overlap_iou_equals_the_authors_protocol():
    g = torch.Generator().manual_seed(3)
    masks = (torch.randn(4, 5, 12, 12, generator=g) * 3).softmax(1)
    target = labels((4, 12, 12), 6, 8)
    target[0, :, :] = torch.where(target[0] == 5, 0, target[0])  # entity 5 absent in image 0
    target[1, 0, :3] = 9  # a 3-pixel entity: not counted
    got = F.best_overlap_iou(masks, target)
    for i in range(4):
        ids = np.unique(target[i].numpy())
        label_masks = np.stack([target[i].numpy() == u for u in ids]).astype(float)
        assert got[i].item() == pytest.approx(permute_iou_reference(label_masks, masks[i].numpy()),
                                              abs=1e-7)


def test_best_overlap_iou_hand_case_is_greedy():
    target = torch.tensor([[[0] * 5 + [1] * 5 + [2] * 6]])
    soft = torch.zeros(1, 2, 1, 16)
    soft[0, 0] = 1.0  # one mask covering everything, another empty
    # Every entity picks the same mask: IoUs 5/16, 5/16, 6/16 -> 1/3 (one-to-one would not).
    assert F.best_overlap_iou(soft, target).item() == pytest.approx(1 / 3)
    assert math.isnan(F.best_overlap_iou(soft[..., :4], target[..., :4]).item())  # all < 5 px


# --- confusion matrix, Hungarian scores, clustering -----------------------------------------
def test_confusion_matrix_equals_sklearn_transposed():
    pred, target = labels((500,), 6, 1), labels((500,), 4, 2)
    expected = sk_confusion_matrix(target.numpy(), pred.numpy(), labels=range(6))[:4].T
    assert torch.equal(F.confusion_matrix(pred, target, 6, 4), torch.from_numpy(expected))
    with pytest.raises(ValueError, match="pred ids"):
        F.confusion_matrix(pred, target, 5, 4)


def dti_reference_scores(hist_true_rows):
    """DTI-Sprites' ``SegmentationScores.compute`` (with background), square matrix."""
    best = linear_sum_assignment(-hist_true_rows)[1]
    hist = hist_true_rows[:, best]
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.diag(hist) / hist.sum(1)
        iou = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
    return np.mean(np.nan_to_num(acc)), np.mean(np.nan_to_num(iou))


@pytest.mark.parametrize("seed", range(3))
def test_hungarian_scores_equal_dti_sprites_code(seed):
    pred, target = labels((4000,), 5, seed), labels((4000,), 5, seed + 10)
    pred = torch.where(target == 4, (target + seed) % 4, pred)  # class 4 is never predicted well
    confusion = F.confusion_matrix(pred, target, 256, 5)  # capped rows, mostly empty
    macc, miou, mapping = F.hungarian_scores(confusion)
    ref = dti_reference_scores(confusion[:5].T.double().numpy())
    assert (macc.item(), miou.item()) == pytest.approx(ref, abs=1e-12)
    assert sorted(mapping.tolist()) == list(range(5))


def test_hungarian_scores_hand_case():
    # rows = predictions; class 2 never occurs, prototype 3 is unmatched (its pixels are errors).
    confusion = torch.tensor([[0, 8, 0], [6, 0, 0], [0, 0, 0], [2, 2, 0]])
    macc, miou, mapping = F.hungarian_scores(confusion)
    assert mapping.tolist() == [1, 0, -1]
    # acc: 6/8, 8/10, 0 ; IoU: 6/(6+8-6)=6/8, 8/(8+10-8)=8/10, 0
    assert macc.item() == pytest.approx((0.75 + 0.8) / 3)
    assert miou.item() == pytest.approx((0.75 + 0.8) / 3)
    assert F.matched_accuracy(confusion).item() == pytest.approx(14 / 18)
    assert all(math.isnan(v.item()) for v in F.hungarian_scores(torch.zeros(3, 2))[:2])


def test_cluster_accuracy_equals_best_permutation():
    true = labels((300,), 4, 5)
    pred = torch.where(labels((300,), 10, 6) < 7, (true * 3 + 1) % 4, labels((300,), 4, 7))
    best = max(np.mean(np.array(perm)[pred.numpy()] == true.numpy())
               for perm in itertools.permutations(range(4)))
    assert F.cluster_accuracy(pred, true).item() == pytest.approx(best, abs=1e-12)
    assert F.cluster_accuracy(true + 100, true).item() == 1.0
    # More clusters than classes: one-to-one, the surplus cluster's images count as errors.
    assert F.cluster_accuracy(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 0, 1, 1])).item() == 0.75


# --- foreground, ReDO's permutation, counts -------------------------------------------------
def test_foreground_scores_per_image_and_pooled():
    target = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]]]).bool()
    pred = torch.tensor([[[1, 0, 1, 0]], [[0, 0, 0, 0]]]).bool()
    acc, iou = F.foreground_scores(pred, target)
    assert acc.tolist() == [0.5, 1.0]
    assert iou.tolist() == [pytest.approx(1 / 3), 1.0]  # empty vs empty agrees perfectly
    acc, iou = F.foreground_scores(pred, target, pooled=True)
    assert (acc.item(), iou.item()) == (pytest.approx(6 / 8), pytest.approx(1 / 3))


def test_best_permutation_is_redo_max_over_mask_and_complement():
    g = torch.Generator().manual_seed(1)
    seg = labels((5, 10, 10), 2, 11)
    target = torch.rand(5, 10, 10, generator=g) < 0.4
    acc, iou = F.best_permutation_foreground_scores(seg, target)
    for i in range(5):
        m, gt = seg[i].numpy() == 0, target[i].numpy()
        ref_acc = max(np.mean(m == gt), np.mean(~m == gt))
        ref_iou = max((m & gt).sum() / (m | gt).sum(), (~m & gt).sum() / (~m | gt).sum())
        assert (acc[i].item(), iou[i].item()) == pytest.approx((ref_acc, ref_iou), abs=1e-12)
    inverted = F.best_permutation_foreground_scores(1 - target.long(), target)
    assert inverted[0].min().item() == 1.0 and inverted[1].min().item() == 1.0


def test_dataset_permutation_uses_one_region_for_all_images():
    target = torch.tensor([[[1, 1, 0, 0]], [[1, 1, 0, 0]]]).bool()
    seg = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 1, 1]]])  # region 1, then region 0, is the object
    acc, iou, foreground = F.dataset_permutation_foreground_scores(seg, target)
    assert foreground.tolist() == [True, False]
    assert acc.tolist() == [0.0, 1.0] and iou.tolist() == [0.0, 1.0]
    per_image = F.best_permutation_foreground_scores(seg, target)
    assert per_image[1].tolist() == [1.0, 1.0]
    # A region absent from the whole batch is still a candidate when K is given.
    full = torch.zeros(1, 1, 4, dtype=torch.long)
    assert F.best_permutation_foreground_scores(full, full.bool(), 2)[0].item() == 1.0


def test_more_regions_a_single_background_region_is_a_candidate():
    target = torch.tensor([[[0, 0, 1, 1, 1, 1]]]).bool()
    seg = torch.tensor([[[0, 0, 1, 1, 2, 2]]])  # object split into regions 1 and 2
    acc, iou = F.best_permutation_foreground_scores(seg, target)
    assert acc.item() == 1.0 and iou.item() == 1.0
    acc, iou, foreground = F.dataset_permutation_foreground_scores(seg, target)
    assert foreground.tolist() == [False, True, True] and iou.item() == 1.0


def test_count_accuracy():
    assert F.count_accuracy(torch.tensor([1, 2, 3, 0]), torch.tensor([1, 2, 0, 0])).item() == 0.75
