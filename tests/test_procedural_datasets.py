"""Every procedural benchmark: contract, facts, ground-truth consistency, determinism, splits."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import default_collate

from datamodules.colored_mnist import ColoredMNISTDataModule
from datamodules.identity_switch import IdentitySwitchDataModule
from datamodules.multi_dsprites import (LAVAEDSpritesDataModule, MultiDSprites2DataModule,
                                        MultiDSpritesColoredDataModule, MultiDSpritesDataModule)
from datamodules.multi_mnist import MultiMNIST1kDataModule, MultiMNIST10kDataModule
from datamodules.multi_texture import MultiTextureDataModule
from datamodules.tetrominoes import TetrominoesDataModule
from objdecomp.types import check_batch

# name -> (class, allowed object counts per split, whether objects are flat-coloured)
SETS = {
    "tetrominoes": (TetrominoesDataModule, {"train": {3}, "test": {3}}, True),
    "multi_dsprites": (MultiDSpritesDataModule, {"train": {2, 3, 4, 5}}, True),
    "multi_dsprites_colored": (MultiDSpritesColoredDataModule, {"train": {1, 2, 3, 4}}, True),
    "multi_dsprites2": (MultiDSprites2DataModule, {"train": {2}}, True),
    "lavae_dsprites": (LAVAEDSpritesDataModule, {"train": {0, 1, 2, 3}, "test": {7}}, True),
    "multi_mnist_1k": (MultiMNIST1kDataModule, {"train": {0, 1, 2, 3}, "test": {7}}, True),
    "multi_mnist_10k": (MultiMNIST10kDataModule, {"train": {0, 1, 2, 3}, "test": {7}}, True),
    "colored_mnist": (ColoredMNISTDataModule, {"train": {2}}, True),
    "multi_texture": (MultiTextureDataModule, {"train": {1, 2, 3, 4}}, False),
    "identity_switch": (IdentitySwitchDataModule, {"train": {2}}, False),
}
RANDOM_SPLITS = [name for name in SETS if name != "identity_switch"]  # its val/test: a sequence
N = 48


def batch_of(name: str, split: str = "train", n: int = N, **kwargs):
    datamodule = SETS[name][0](train_size=200, val_size=50, test_size=60, **kwargs)
    if name == "identity_switch" and split != "train":
        n = min(n, 50 if split == "val" else 60)
    dataset = datamodule.make_dataset(split)
    return datamodule, default_collate(dataset.__getitems__(list(range(n))))


@pytest.mark.parametrize("name", SETS)
def test_contract_facts_and_value_ranges(name):
    datamodule, batch = batch_of(name)
    check_batch(batch)
    image = batch["image"]
    assert datamodule.dataset_name == name
    assert image.shape[1:] == (datamodule.channels, datamodule.image_size, datamodule.image_size)
    assert 0 <= image.min() and image.max() <= 1
    assert torch.equal((image * 255).round() / 255, image)  # uint8 levels: a lossless cache
    assert batch["mask"].max() <= datamodule.max_objects
    assert batch["semantic"].max() < datamodule.num_classes
    assert datamodule.num_background == 1


@pytest.mark.parametrize("name", SETS)
@pytest.mark.parametrize("split", ["train", "test"])
def test_masks_semantics_and_counts_agree(name, split):
    allowed = SETS[name][1].get(split, SETS[name][1]["train"])
    _, batch = batch_of(name, split)
    for image, mask, semantic, count in zip(batch["image"], batch["mask"], batch["semantic"],
                                            batch["count"]):
        ids = mask.unique()
        objects = ids[ids > 0]
        # every counted object has pixels, with consecutive ids 1..count
        assert objects.tolist() == list(range(1, int(count) + 1))
        assert int(count) in allowed
        assert torch.equal(semantic == 0, mask == 0)
        for entity in ids:
            pixels = mask == entity
            assert semantic[pixels].unique().numel() == 1  # one class per instance
            if SETS[name][2]:  # flat colours: each entity is one colour
                assert image[:, pixels].unique(dim=1).shape[1] == 1


@pytest.mark.parametrize("name", SETS)
def test_deterministic_and_seeded(name):
    _, first = batch_of(name, n=12)
    _, again = batch_of(name, n=12)
    _, other_seed = batch_of(name, n=12, seed=1)
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["mask"], again["mask"])
    assert not torch.equal(first["image"], other_seed["image"])


@pytest.mark.parametrize("name", RANDOM_SPLITS)
def test_splits_are_disjoint_unless_evaluating_on_train(name):
    _, train = batch_of(name, "train")
    _, val = batch_of(name, "val")
    occupied = lambda b: b["count"] >= 2  # empty or single-object scenes may repeat by chance
    a, b = train["image"][occupied(train)].flatten(1), val["image"][occupied(val)].flatten(1)
    assert (a[:, None] == b[None]).all(-1).sum() == 0
    _, dti_test = batch_of(name, "test", n=8, eval_on_train=True)
    assert torch.equal(dti_test["image"], train["image"][:8])  # DTI: test = first train images


def test_tetrominoes_never_overlap():
    _, batch = batch_of("tetrominoes")
    for mask in batch["mask"]:
        # no occlusion: every piece shows all of its 4 cells of 5x5 pixels
        assert torch.bincount(mask.flatten())[1:].tolist() == [100, 100, 100]


def test_lavae_sprites_keep_their_boxes_apart():
    for split in ("train", "test"):
        _, batch = batch_of("lavae_dsprites", split)
        for mask in batch["mask"]:
            boxes = []
            for entity in mask.unique()[1:]:
                rows, cols = (mask == entity).nonzero().T
                boxes.append((rows.min(), rows.max(), cols.min(), cols.max()))
            for i, (r0, r1, c0, c1) in enumerate(boxes):
                for s0, s1, d0, d1 in boxes[:i]:
                    assert r1 < s0 or s1 < r0 or c1 < d0 or d1 < c0


def test_multi_dsprites_background_is_grey_and_lavae_black():
    _, grey = batch_of("multi_dsprites")
    background = grey["image"].permute(0, 2, 3, 1)[grey["mask"] == 0]
    assert torch.equal(background[:, 0], background[:, 1])
    assert torch.equal(background[:, 1], background[:, 2])
    _, black = batch_of("lavae_dsprites")
    assert black["image"].permute(0, 2, 3, 1)[black["mask"] == 0].max() == 0


def test_lavae_test_split_sets_max_objects():
    assert LAVAEDSpritesDataModule().max_objects == 7
    assert LAVAEDSpritesDataModule(test_objects=None).max_objects == 3
