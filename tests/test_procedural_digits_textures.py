"""Digit sources and the dataset-specific rules of the digit, texture and identity sets."""

from __future__ import annotations

import gzip
import logging

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from datamodules import mnist_source
from datamodules.colored_mnist import ColoredMNISTDataModule
from datamodules.identity_switch import GRID, IdentitySwitchDataModule, sequence_offsets
from datamodules.multi_mnist import MultiMNIST1kDataModule
from datamodules.multi_texture import COUNT_PROBABILITIES, MultiTextureRenderer
from datamodules.procedural import Random, item_keys
from objdecomp import gallery


def _write_idx(path, array, gz):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as stream:
        stream.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fresh_digits(monkeypatch, tmp_path):
    monkeypatch.setenv("OBJDECOMP_DATA", str(tmp_path))
    mnist_source.load_digits.cache_clear()
    yield tmp_path / "MNIST" / "raw"
    mnist_source.load_digits.cache_clear()


def test_idx_files_are_read_in_torchvisions_layout(fresh_digits, caplog):
    fresh_digits.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28))
    labels = np.arange(5)
    for prefix, gz in (("train", True), ("t10k", False)):
        name = f"{prefix}-images-idx3-ubyte" + (".gz" if gz else "")
        _write_idx(fresh_digits / name, images, gz)
        _write_idx(fresh_digits / (f"{prefix}-labels-idx1-ubyte" + (".gz" if gz else "")), labels, gz)
    assert mnist_source.mnist_source() == "idx"
    with caplog.at_level(logging.INFO):
        digits, targets = mnist_source.load_digits("train")
    assert torch.equal(digits, torch.from_numpy(images.astype(np.uint8)))
    assert targets.tolist() == [0, 1, 2, 3, 4]
    assert "IDX files" in caplog.text


def test_missing_idx_files_fall_back_loudly_to_sklearn_digits(fresh_digits, caplog):
    assert mnist_source.mnist_source() == "sklearn"
    with caplog.at_level(logging.WARNING):
        digits, labels = mnist_source.load_digits("train")
    assert "not MNIST" in caplog.text
    assert digits.shape[1:] == (28, 28) and digits.dtype == torch.uint8
    assert digits[:, :4].max() == 0  # MNIST's layout: the digit in the central 20x20
    assert set(labels.tolist()) == set(range(10))


def test_multi_mnist_is_binary_and_labels_digits():
    dataset = MultiMNIST1kDataModule(train_size=64).make_dataset("train")
    batch = default_collate(dataset.__getitems__(list(range(32))))
    assert batch["image"].shape[1] == 1
    assert set(batch["image"].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(batch["image"][:, 0] > 0, batch["mask"] > 0)



def test_multi_mnist_image_size_scales_the_digits():
    small = MultiMNIST1kDataModule(image_size=32, train_size=64, test_objects=None)
    assert small.facts["image_size"] == 32 and small.patch == 7  # 15/64 of the canvas, odd
    batch = default_collate(small.make_dataset("train").__getitems__(list(range(64))))
    assert batch["image"].shape[-2:] == (32, 32)
    full = default_collate(MultiMNIST1kDataModule(train_size=64).make_dataset("train")
                           .__getitems__(list(range(64))))
    area = lambda b: (b["mask"] > 0).float().mean()
    assert abs(area(batch) - area(full)) < 0.02  # digits keep their share of the canvas

def test_colored_mnist_colour_laws():
    dataset = ColoredMNISTDataModule(train_size=32).make_dataset("train")
    batch = default_collate(dataset.__getitems__(list(range(16))))
    pixels = (batch["image"] * 255).round().permute(0, 2, 3, 1)
    background, even, odd = (pixels[batch["semantic"] == c] for c in (0, 1, 2))
    assert torch.equal(background[:, 0], background[:, 1])  # R = G
    assert background.min() >= 84 and background.max() <= 169  # [.33, .66]
    assert torch.equal(even[:, 1], even[:, 2]) and even.max() <= 85  # G = B in [0, .33]
    assert torch.equal(odd[:, 0], odd[:, 2]) and odd.min() >= 168  # R = B in [.66, 1]
    assert bool((batch["mask"] == 2).any()) and set(batch["count"].tolist()) == {2}


def test_multi_texture_counts_and_placement_rule():
    renderer = MultiTextureRenderer()
    rng = Random(item_keys(0, "multi_texture", "train", range(2000)))
    count = rng.choice(COUNT_PROBABILITIES) + 1
    frequencies = torch.bincount(count, minlength=5)[1:].float() / len(count)
    assert torch.allclose(frequencies, torch.tensor(COUNT_PROBABILITIES), atol=0.03)
    active = torch.arange(4) < count[:, None]
    offsets, ok = renderer._place(rng, active)
    assert ok.float().mean() > 0.99
    assert offsets.abs().max() <= renderer.max_shift
    for a in range(4):
        for b in range(a):
            both = active[:, a] & active[:, b] & ok
            assert ((offsets[both, a] - offsets[both, b]).abs().sum(-1) > 10).all()


def test_identity_sequence_order_identities_and_fixed_appearance():
    offsets = sequence_offsets([0, 1, 9, 81])
    assert offsets[1, 0].tolist() == [GRID[1].item(), 0.0]  # the ellipse moves first, by rows
    assert offsets[2, 0].tolist() == [0.0, GRID[1].item()]
    assert offsets[3, 1].tolist() == [GRID[1].item(), 0.0]  # then the square steps
    assert torch.equal(offsets[1, 1], offsets[0, 1])
    datamodule = IdentitySwitchDataModule()
    test = datamodule.make_dataset("test")
    assert len(test) == 255
    batch = default_collate(test.__getitems__([0, 1, 100]))
    for mask, semantic in zip(batch["mask"], batch["semantic"]):
        assert semantic[mask == 1].unique().tolist() == [2]  # id 1 is always the ellipse
        assert semantic[mask == 2].unique().tolist() == [1]  # id 2 the square
    empty = (batch["mask"] == 0).all(0)
    assert torch.equal(batch["image"][0][:, empty], batch["image"][2][:, empty])
    with pytest.raises(ValueError):
        IdentitySwitchDataModule(test_size=9 ** 4).make_dataset("test")


def test_gallery_writes_a_png(tmp_path):
    out = tmp_path / "tetrominoes.png"
    gallery.main(["tetrominoes", "--n", "4", "--out", str(out)])
    assert out.stat().st_size > 0
    batch = gallery.datamodule_class("tetrominoes")().sample_batch("train", 3)
    rows = gallery.gallery_rows(batch, zoom=2)
    assert list(rows) == ["image", "mask", "semantic"]
    assert rows["mask"].shape == (3, 3, 70, 70)


def test_colored_mnist_image_size_scales_the_digits():
    datamodule = ColoredMNISTDataModule(image_size=32, train_size=16)
    assert datamodule.facts["image_size"] == 32
    batch = default_collate(datamodule.make_dataset("train").__getitems__(list(range(16))))
    assert batch["image"].shape[-2:] == (32, 32)
    digit_area = (batch["mask"] > 0).float().mean()
    full = default_collate(ColoredMNISTDataModule(train_size=16).make_dataset("train").__getitems__(list(range(16))))
    assert abs(digit_area - (full["mask"] > 0).float().mean()) < 0.05  # same share of the canvas
