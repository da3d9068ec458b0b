"""Metric classes: wiring to the two contracts, accumulation over batches, summable states."""

import math

import pytest
import torch

from objdecomp.metrics import (ARI, ARIFG, ARIFGDTI, BestPermutationForeground, ClusterAccuracy,
                               CountAccuracy, ForegroundSegmentation, ImageMean,
                               SemanticSegmentation, build_metrics)
from objdecomp.metrics import functional as F
from objdecomp.types import Decomposition


def make_batch(n, k=4, size=8, seed=0, num_classes=3):
    """Random ground truth of every kind and a random decomposition that follows contract 2."""
    g = torch.Generator().manual_seed(seed)
    masks = (torch.randn(n, k, size, size, generator=g) * 2).softmax(1)
    batch = {"image": torch.rand(n, 3, size, size, generator=g),
             "mask": torch.randint(0, 4, (n, size, size), generator=g),
             "semantic": torch.randint(0, num_classes, (n, size, size), generator=g),
             "label": torch.randint(0, 3, (n,), generator=g),
             "count": torch.randint(0, 3, (n,), generator=g)}
    decomposition = Decomposition(
        recon=torch.rand(n, 3, size, size, generator=g), masks=masks,
        background=torch.arange(k) == 0, layers=torch.rand(n, k, 3, size, size, generator=g),
        classes=torch.randint(0, 5, (n, k), generator=g),
        count=torch.randint(0, 3, (n,), generator=g)).check(batch["image"])
    return batch, decomposition


def split(batch, decomposition, sizes):
    """Consecutive sub-batches of the given sizes."""
    start = 0
    for size in sizes:
        part = slice(start, start + size)
        yield ({key: value[part] for key, value in batch.items()},
               Decomposition(decomposition.recon[part], decomposition.masks[part],
                             decomposition.background, *(None if field is None else field[part]
                                                         for field in (decomposition.layers,
                                                                       decomposition.classes,
                                                                       decomposition.count))))
        start += size


def feed(metric, batch, decomposition, sizes=(3, 5, 1, 4)):
    for part in split(batch, decomposition, sizes):
        metric.update(*part)
    return metric.compute()


def test_build_metrics_follows_the_dataset_facts():
    multi = build_metrics(num_classes=4, num_background=1, max_objects=5)
    assert set(multi) == {"ari", "ari_fg", "ari_fg_dti", "matched_miou", "best_overlap_miou",
                          "semantic", "cluster", "fg", "count"}
    single = build_metrics(num_classes=0, num_background=1, max_objects=1)
    assert "fg_best" in single and "semantic" not in single
    no_background = build_metrics(num_classes=0, num_background=0, max_objects=3)
    assert not {"ari_fg", "ari_fg_dti", "fg", "fg_best"} & set(no_background)
    assert multi["ari_fg"].num_background == 1
    assert build_metrics(0, 4, 6)["ari_fg"].num_background == 4  # Objects Room


def test_metrics_apply_only_to_batches_with_their_ground_truth():
    batch, decomposition = make_batch(2)
    metrics = build_metrics(num_classes=3, num_background=1, max_objects=1)
    assert all(m.applies_to(batch, decomposition) for m in metrics.values())
    images_only = {"image": batch["image"]}
    assert not any(m.applies_to(images_only, decomposition) for m in metrics.values())
    plain = Decomposition(decomposition.recon, decomposition.masks, decomposition.background)
    assert not metrics["semantic"].applies_to(batch, plain)
    assert not metrics["cluster"].applies_to(batch, plain)
    assert not metrics["count"].applies_to(batch, plain)  # needs decomposition.count
    assert not metrics["ari_fg_dti"].applies_to(batch, plain)  # needs decomposition.layers
    assert metrics["ari"].applies_to(batch, plain)


def test_per_image_means_over_batches_equal_the_functional_core():
    batch, decomposition = make_batch(13)
    batch["mask"][4] = 0  # one image without foreground: ARI-FG undefined there
    seg = decomposition.segmentation()
    values = feed(ARIFG(num_background=1), batch, decomposition)
    expected = F.adjusted_rand_index(seg, batch["mask"], batch["mask"] >= 1)
    assert math.isnan(expected[4].item())
    assert values[""].item() == pytest.approx(expected.nanmean().item(), abs=1e-12)
    assert values["n_undefined"].item() == 1
    ari = ARI()
    values = feed(ari, batch, decomposition)
    assert set(values) == {""}  # never undefined: no n_undefined log line
    assert values[""].item() == pytest.approx(
        F.adjusted_rand_index(seg, batch["mask"]).mean().item(), abs=1e-12)
    assert ari.n_images.item() == 13
    ari.reset()
    assert ari.n_images.item() == 0 and ari.total.item() == 0


def test_every_metric_equals_one_pass_and_merges_exactly():
    """Uneven sub-batches, and two halves merged state-wise, give the one-pass values."""
    batch, decomposition = make_batch(11, seed=3)
    facts = dict(num_classes=3, num_background=1, max_objects=1)
    one_pass, by_parts = build_metrics(**facts), build_metrics(**facts)
    halves = build_metrics(**facts), build_metrics(**facts)
    for name in one_pass:
        one_pass[name].update(batch, decomposition)
        expected = one_pass[name].compute()
        assert feed(by_parts[name], batch, decomposition).keys() == expected.keys()
        for half, part in zip(halves, split(batch, decomposition, (6, 5))):
            half[name].update(*part)
        halves[0][name].merge_state(halves[1][name])
        for key, value in expected.items():
            assert by_parts[name].compute()[key].item() == pytest.approx(value.item(), abs=1e-12)
            assert halves[0][name].compute()[key].item() == pytest.approx(value.item(), abs=1e-12)


def test_semantic_segmentation_is_the_global_confusion_protocol():
    batch, decomposition = make_batch(6, seed=4)
    values = feed(SemanticSegmentation(num_classes=3), batch, decomposition, (2, 4))
    confusion = F.confusion_matrix(decomposition.semantic_segmentation(), batch["semantic"], 5, 3)
    macc, miou, _ = F.hungarian_scores(confusion)
    assert (values["macc"].item(), values["miou"].item()) == (macc.item(), miou.item())
    with pytest.raises(ValueError, match="target ids"):
        SemanticSegmentation(num_classes=2).update(batch, decomposition)


def test_cluster_of_an_image_is_its_first_foreground_component():
    batch, decomposition = make_batch(9, seed=5)
    decomposition.background = torch.tensor([True, True, False, False])
    decomposition.classes[:, 2] = (batch["label"] + 1) % 3  # a relabelling of the truth
    assert feed(ClusterAccuracy(), batch, decomposition, (4, 5))[""].item() == 1.0
    decomposition.classes[:, 2] = 0
    assert feed(ClusterAccuracy(), batch, decomposition, (9,))[""].item() == pytest.approx(
        torch.bincount(batch["label"]).max().item() / 9)


def test_foreground_uses_the_background_components():
    batch, decomposition = make_batch(5, seed=6)
    truth = batch["mask"] >= 1
    masks = torch.stack([~truth, truth, torch.zeros_like(truth), torch.zeros_like(truth)], 1)
    decomposition.masks = masks.float()
    values = feed(ForegroundSegmentation(num_background=1), batch, decomposition, (2, 3))
    assert all(v.item() == 1.0 for v in values.values())
    decomposition.background = torch.tensor([False, True, True, True])  # inverted roles
    values = feed(ForegroundSegmentation(num_background=1), batch, decomposition, (5,))
    assert values["acc"].item() == 0.0 and values["iou_pooled"].item() == 0.0
    # ReDO's per-image permutation does not care which region is called background.
    values = feed(BestPermutationForeground(num_background=1), batch, decomposition, (1, 4))
    assert values["acc"].item() == 1.0 and values["iou_dataset"].item() == 1.0


def test_count_accuracy_counts_images():
    batch, decomposition = make_batch(7, seed=7)
    metric = CountAccuracy()
    values = feed(metric, batch, decomposition, (3, 4))
    expected = (decomposition.count == batch["count"]).double().mean().item()
    assert values[""].item() == pytest.approx(expected) and metric.n_images.item() == 7


def _dti_case():
    """Three 4x4 images: a red square (id 1) and a green one (id 2) on black, the third image
    all background; layer 1 red, layer 2 green everywhere; the background component owns
    every pixel but one or two, and image 1's layer 1 is the empty sprite (class 0)."""
    images = torch.zeros(3, 3, 4, 4)
    images[:, 0, :2, :2] = 1.0
    images[:, 1, 2:, 2:] = 1.0
    mask = torch.zeros(3, 4, 4, dtype=torch.long)
    mask[:, :2, :2], mask[:, 2:, 2:], mask[2] = 1, 2, 0
    layers = torch.zeros(3, 3, 3, 4, 4)
    layers[:, 1, 0], layers[:, 2, 1] = 0.9, 0.8
    masks = torch.zeros(3, 3, 4, 4)
    masks[:, 0] = 1.0
    masks[0, :, 0, 0] = torch.tensor([0.0, 1.0, 0.0])
    masks[1, :, 3, 3] = masks[1, :, 0, 0] = torch.tensor([0.0, 0.0, 1.0])
    classes = torch.tensor([[0, 1, 2], [0, 0, 3], [0, 1, 2]])
    decomposition = Decomposition(images, masks, torch.tensor([True, False, False]), layers, classes)
    return {"image": images, "mask": mask}, decomposition


def test_ari_fg_dti_reassigns_to_every_object_layer_as_the_authors_code():
    """Per-image values and mean of DTI's protocol: predicted background goes to the closest
    object layer, empty ones included (#14 item 7), NaN images ignored."""
    batch, decomposition = _dti_case()
    metric = ARIFGDTI(num_background=1)
    image_1 = 0.4948453608247423  # its empty layer 1 competes too
    assert metric.scores(batch, decomposition).tolist()[:2] == pytest.approx([1.0, image_1], abs=1e-12)
    values = feed(metric, batch, decomposition, sizes=(2, 1))
    assert values[""].item() == pytest.approx((1 + image_1) / 2, abs=1e-12)
    assert values["n_undefined"].item() == 1  # the image without foreground
    unclassed = Decomposition(decomposition.recon, decomposition.masks,
                              decomposition.background, decomposition.layers)
    assert metric.scores(batch, unclassed)[1].item() == pytest.approx(image_1, abs=1e-12)
    reassigned = F.reassign_background_to_layers(
        batch["image"], unclassed.segmentation(), unclassed.layers, unclassed.background,
        torch.tensor([[False, True, True]] * 3))
    assert reassigned[1].tolist() == [[2, 1, 2, 2], [1, 1, 2, 2], [2, 2, 2, 2], [2, 2, 2, 2]]


def test_image_mean_is_exact_over_batches_and_merged_states():
    values = torch.rand(13, dtype=torch.float64)
    by_batches, halves = ImageMean(), (ImageMean(), ImageMean())
    for part in values.split([3, 9, 1]):
        by_batches.update(part)
    halves[0].update(values[:6])
    halves[1].update(values[6:])
    halves[0].merge_state(halves[1])  # what the DDP reduction of the summed states does
    assert by_batches.compute().item() == pytest.approx(values.mean().item(), abs=1e-15)
    assert halves[0].compute().item() == pytest.approx(values.mean().item(), abs=1e-15)
