"""The procedural machinery: keyed randomness, batch-independent rendering, pasting, placement, cache."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from datamodules.procedural import ProceduralDataset, Random, item_keys, paste_windows
from datamodules.shapes import place_boxes, tight_boxes
from datamodules.tetrominoes import TetrominoesRenderer
from datamodules.textures import hsv_to_rgb


def test_random_streams_depend_only_on_their_key():
    keys = item_keys(0, "demo", "train", range(6))
    together = Random(keys).uniform(5)
    alone = Random(keys[[4, 1]]).uniform(5)
    assert torch.equal(together[[4, 1]], alone)
    values = Random(keys).integers(3, 7, 1000)
    assert values.min() == 3 and values.max() == 6
    assert not torch.equal(together[0], together[1])


def test_keys_differ_across_splits_datasets_and_seeds():
    base = set(item_keys(0, "a", "train", range(100)).tolist())
    for other in (item_keys(0, "a", "val", range(100)), item_keys(0, "b", "train", range(100)),
                  item_keys(1, "a", "train", range(100)), item_keys(0, "a", "test7", range(100))):
        assert base.isdisjoint(other.tolist())


def test_choice_follows_probabilities():
    draws = Random(item_keys(0, "demo", "train", range(20_000))).choice([0.8, 0.1, 0.1])
    frequencies = torch.bincount(draws.flatten(), minlength=3).float() / draws.numel()
    assert torch.allclose(frequencies, torch.tensor([0.8, 0.1, 0.1]), atol=0.01)


def test_paste_windows_occlusion_order():
    windows = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    windows[0, 0, :3, :3] = True  # object 1 covers rows/cols 0-2 of its window
    windows[0, 1, :2, :2] = True  # object 2: a 2x2 block
    origins = torch.tensor([[[0, 0], [1, 1]]])
    active = torch.ones(1, 2, dtype=torch.bool)
    later_front = paste_windows(windows, origins, active, size=5, front="last")[0]
    earlier_front = paste_windows(windows, origins, active, size=5, front="first")[0]
    assert later_front[1, 1] == 2 and earlier_front[1, 1] == 1
    assert later_front[2, 2] == 2 and earlier_front[2, 2] == 1
    assert later_front[0, 0] == 1 and later_front[4, 4] == 0
    inactive = paste_windows(windows, origins, torch.tensor([[True, False]]), size=5)[0]
    assert inactive.max() == 1


def test_paste_windows_clips_at_the_border():
    windows = torch.ones(1, 1, 3, 3, dtype=torch.bool)
    ids = paste_windows(windows, torch.tensor([[[-1, 3]]]), torch.ones(1, 1, dtype=torch.bool), 4)
    assert ids.sum() == 2 * 1  # rows 0-1, column 3 only
    assert ids[0, :2, 3].tolist() == [1, 1]


def test_place_boxes_never_overlaps():
    n, k = 200, 4
    boxes = torch.tensor([0, 0, 6, 9]).expand(n, k, 1, 4)
    limits = torch.full((n, k, 2), 20)
    origins, ok = place_boxes(Random(item_keys(0, "demo", "train", range(n))), boxes,
                              torch.ones(n, k, dtype=torch.bool), limits)
    assert ok.float().mean() > 0.5
    r, c = origins[ok, :, 0], origins[ok, :, 1]
    for a in range(k):
        for b in range(a):
            apart = ((r[:, a] - r[:, b]).abs() >= 6) | ((c[:, a] - c[:, b]).abs() >= 9)
            assert apart.all()


def test_tight_boxes():
    windows = torch.zeros(2, 5, 6, dtype=torch.bool)
    windows[0, 1:4, 2:3] = True
    assert tight_boxes(windows)[0, 0].tolist() == [1, 2, 3, 1]
    assert tight_boxes(windows)[1, 0, 2:].tolist() == [0, 0]


def test_hsv_to_rgb_matches_colorsys():
    hsv = torch.rand(50, 3, generator=torch.Generator().manual_seed(0))
    expected = torch.tensor([colorsys.hsv_to_rgb(*row) for row in hsv.tolist()])
    assert torch.allclose(hsv_to_rgb(hsv), expected, atol=1e-6)


def _dataset(length=40, **kwargs):
    return ProceduralDataset(TetrominoesRenderer(), "tetrominoes", 3, "train", length, **kwargs)


def test_items_are_identical_whatever_batch_or_order():
    dataset = _dataset()
    batch = dataset.render(range(40))
    shuffled = dataset.render([31, 2, 17])
    for field in ("image", "mask", "semantic", "count"):
        assert torch.equal(getattr(batch, field)[[31, 2, 17]], getattr(shuffled, field))
    single = dataset[17]
    assert torch.equal(single["image"], batch.image[17].float() / 255)
    with pytest.raises(IndexError):
        dataset[40]


def test_worker_processes_give_the_same_items():
    dataset = _dataset(16)
    in_process = next(iter(DataLoader(dataset, batch_size=16)))
    in_worker = next(iter(DataLoader(dataset, batch_size=16, num_workers=1)))
    assert torch.equal(in_process["image"], in_worker["image"])
    assert torch.equal(in_process["mask"], in_worker["mask"])


def test_uint8_cache_is_lossless(tmp_path):
    cached = _dataset(cache_dir=str(tmp_path))
    assert len(list(tmp_path.glob("*.npy"))) == 4
    fresh = _dataset()
    indices = [0, 39, 5]
    for a, b in zip(cached.__getitems__(indices), fresh.__getitems__(indices)):
        for key in a:
            assert torch.equal(a[key], b[key])
    reloaded = _dataset(cache_dir=str(tmp_path))  # reads the files, renders nothing
    assert np.array_equal(reloaded.cache["mask"], cached.cache["mask"])
