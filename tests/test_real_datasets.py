"""Real-dataset datamodules on tiny fixtures written in the exact on-disk formats (tests/fixtures)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.deepmind import (CLEVR6DataModule, DeepMindMultiDSpritesDataModule,
                                  DeepMindTetrominoesDataModule, ObjectsRoomDataModule, dti_subset)
from datamodules.deepmind_prepare import prepare
from datamodules.tfrecord import TFRecordError
from objdecomp.paths import DatasetNotFoundError
from objdecomp.types import check_batch
from tests.fixtures import deepmind as dm_fixtures

# --- DeepMind multi-object sets -------------------------------------------------------------

DEEPMIND = [(DeepMindTetrominoesDataModule, "tetrominoes", {}),
            (DeepMindMultiDSpritesDataModule, "colored_on_grayscale", {}),
            (DeepMindMultiDSpritesDataModule, "colored_on_colored", {"variant": "colored_on_colored"}),
            (ObjectsRoomDataModule, "objects_room", {})]


def _scenes(spec_key, counts, seed=0, size=None):
    rng = np.random.default_rng(seed)
    return [dm_fixtures.make_scene(spec_key, n, rng, size=size) for n in counts]


def _prepared(tmp_path, cls, spec_key, kwargs, source, scenes):
    module = cls(root=str(tmp_path / "bench"), source=source, batch_size=2, **kwargs)
    if source == "deepmind":
        path = dm_fixtures.write_tfrecord(tmp_path / "in.tfrecords", spec_key, scenes)
    else:
        path = dm_fixtures.write_ocl_hdf5(tmp_path / "in.hdf5", spec_key, scenes)
    prepare(spec_key, source, path, module.cache_dir, log=lambda _: None)
    module.setup("fit")
    return module


def _assert_semantic_consistent(semantic, mask, num_background, scene):
    """Background is class 0; objects with the same class code share a class, others differ."""
    assert (semantic[mask < num_background] == 0).all()
    codes = scene.shape * 256 + scene.material
    classes = {}
    for entity in np.unique(mask[mask >= num_background]):
        values = np.unique(semantic[mask == entity])
        assert len(values) == 1 and values[0] > 0
        classes.setdefault(codes[entity], set()).add(int(values[0]))
    assert all(len(v) == 1 for v in classes.values())
    assert len({min(v) for v in classes.values()}) == len(classes)


@pytest.mark.parametrize("source", ["deepmind", "ocl"])
@pytest.mark.parametrize("cls,spec_key,kwargs", DEEPMIND)
def test_deepmind_sets_load_exact_images_masks_and_classes(tmp_path, cls, spec_key, kwargs, source):
    if source == "ocl" and spec_key == "colored_on_colored":
        pytest.skip("the object-centric-library has only the colored_on_grayscale variant")
    spec = dm_fixtures.SPECS[spec_key]
    scenes = _scenes(spec_key, [spec.max_objects, 1, 2, spec.max_objects])
    module = _prepared(tmp_path, cls, spec_key, kwargs, source, scenes)
    train = module.datasets["train"]
    assert len(train) == 4 and len(module.datasets["val"]) == 4  # val/test sizes capped at N
    for index, scene in enumerate(scenes):
        item = train[index]
        assert item["image"].shape == (3, spec.image_size, spec.image_size)
        assert item["image"].dtype == torch.float32
        torch.testing.assert_close(item["image"], torch.from_numpy(scene.image).permute(2, 0, 1) / 255.0)
        np.testing.assert_array_equal(item["mask"].numpy(), scene.ids)
        visible = set(np.unique(scene.ids).tolist()) - set(range(spec.num_background))
        assert item["count"].item() == len(visible)
        if spec.num_classes:
            _assert_semantic_consistent(item["semantic"].numpy(), scene.ids, spec.num_background, scene)
        else:
            assert "semantic" not in item
    batch = next(iter(module.train_dataloader()))
    check_batch(batch)
    assert module.num_background == spec.num_background and module.max_objects == spec.max_objects


def test_multi_dsprites_mask_layout_is_transposed(tmp_path):
    """[H, W, K, 1] storage: an asymmetric scene only round-trips if the reader transposes."""
    rng = np.random.default_rng(1)
    scene = dm_fixtures.make_scene("colored_on_grayscale", 2, rng, boxes=[(2, 40, 5, 20), (50, 3, 10, 4)])
    module = _prepared(tmp_path, DeepMindMultiDSpritesDataModule, "colored_on_grayscale", {}, "deepmind", [scene])
    np.testing.assert_array_equal(module.datasets["train"][0]["mask"].numpy(), scene.ids)


def test_wrong_variant_is_a_clear_error(tmp_path):
    scenes = _scenes("colored_on_colored", [2])
    path = dm_fixtures.write_tfrecord(tmp_path / "c.tfrecords", "colored_on_colored", scenes)
    with pytest.raises(ValueError, match="variant"):
        prepare("colored_on_grayscale", "deepmind", path, tmp_path / "cache", log=lambda _: None)


def test_clevr6_filter_crop_resize_and_count(tmp_path):
    rng = np.random.default_rng(2)
    inside = [(60, 100, 40, 30), (120, 180, 30, 50)]  # well inside rows 29:221, cols 64:256
    scenes = [
        dm_fixtures.make_scene("clevr6", 2, rng, boxes=inside),
        dm_fixtures.make_scene("clevr6", 7, rng),  # 7 objects: not CLEVR6
        dm_fixtures.make_scene("clevr6", 3, rng, boxes=inside + [(0, 0, 20, 40)]),  # 3rd cropped away
    ]
    module = _prepared(tmp_path, CLEVR6DataModule, "clevr6", {}, "deepmind", scenes)
    train = module.datasets["train"]
    assert len(train) == 2 and module.image_size == 128 and module.num_classes == 7
    first, third = train[0], train[1]
    assert first["image"].shape == (3, 128, 128)
    assert first["count"].item() == 2 and third["count"].item() == 2
    # Box (60, 100, 40, 30) maps to rows (60-29)/1.5 = 20.7.., cols (100-64)/1.5 = 24: its centre
    # keeps entity 1's colour exactly (bilinear of a constant region) and id (nearest).
    colour = scenes[0].image[80, 115]
    torch.testing.assert_close(first["image"][:, 33, 33], torch.from_numpy(colour).float() / 255)
    assert first["mask"][33, 33].item() == 1 and first["mask"][0, 0].item() == 0
    _assert_semantic_consistent(first["semantic"].numpy(), first["mask"].numpy(), 1, scenes[0])
    meta = (module.cache_dir / "meta.json").read_text()
    assert "<= 6 visible objects" in meta and "crop rows 29:221" in meta


def test_limit_reads_only_the_first_records(tmp_path):
    scenes = _scenes("tetrominoes", [3] * 5)
    path = dm_fixtures.write_tfrecord(tmp_path / "t.tfrecords", "tetrominoes", scenes)
    module = DeepMindTetrominoesDataModule(root=str(tmp_path / "t"))
    meta = prepare("tetrominoes", "deepmind", path, module.cache_dir, limit=3, log=lambda _: None)
    assert meta["num_images"] == 3 and meta["records_read"] == 3


def test_dti_png_source(tmp_path):
    scenes = _scenes("tetrominoes", [3, 2])
    semantic = [np.where(s.ids > 0, s.ids + 4, 0) for s in scenes]
    folder = dm_fixtures.write_dti_pngs(tmp_path / "tetrominoes", scenes, semantic)
    module = DeepMindTetrominoesDataModule(root=str(tmp_path / "t"), source="dti")
    prepare("tetrominoes", "dti", folder, module.cache_dir, log=lambda _: None)
    module.setup("test")
    item = module.datasets["test"][1]
    np.testing.assert_array_equal(item["semantic"].numpy(), semantic[1])
    np.testing.assert_array_equal(item["mask"].numpy(), scenes[1].ids)


def test_corrupt_tfrecord_is_reported(tmp_path):
    path = dm_fixtures.write_tfrecord(tmp_path / "t.tfrecords", "tetrominoes", _scenes("tetrominoes", [3]))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(TFRecordError, match="t.tfrecords"):
        prepare("tetrominoes", "deepmind", path, tmp_path / "cache", log=lambda _: None)


@pytest.mark.parametrize("cls", [DeepMindTetrominoesDataModule, CLEVR6DataModule, ObjectsRoomDataModule,
                                 DeepMindMultiDSpritesDataModule])
def test_missing_cache_names_path_and_command(tmp_path, cls):
    module = cls(root=str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError) as error:
        module.setup("fit")
    message = str(error.value)
    assert str((tmp_path / "nowhere").resolve()) in message
    assert f"objdecomp data {cls.dataset_name}" in message


def test_dti_protocol_splits():
    # DTI-Sprites seeds numpy's global generator and draws with np.random.choice(range(N), ...).
    np.random.seed(42)
    expected = np.random.choice(range(1000), 100, replace=False)
    np.testing.assert_array_equal(dti_subset(1000, 100, seed=42), expected)
    assert CLEVR6DataModule.image_size == 128 and DeepMindTetrominoesDataModule.num_classes == 20
    assert ObjectsRoomDataModule.num_background == 4
    assert DeepMindMultiDSpritesDataModule(variant="colored_on_colored").max_objects == 4
