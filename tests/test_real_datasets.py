"""Real-dataset datamodules on tiny fixtures written in the exact on-disk formats (tests/fixtures)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.deepmind import (CLEVR6DataModule, DeepMindMultiDSpritesDataModule,
                                  DeepMindTetrominoesDataModule, ObjectsRoomDataModule)
from datamodules.deepmind_prepare import prepare
from datamodules.paths import DatasetNotFoundError
from datamodules.real_data import dti_subset
from datamodules.tfrecord import TFRecordError
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
    module = cls(root=str(tmp_path / "bench"), source=source, batch_size=min(2, len(scenes)), **kwargs)
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


# The object-centric-library offers neither colored_on_colored nor objects_room (deepmind_prepare.py).
DEEPMIND_SOURCES = [(*entry, source) for source in ("deepmind", "ocl") for entry in DEEPMIND
                    if source == "deepmind" or entry[1] not in ("colored_on_colored", "objects_room")]


@pytest.mark.parametrize("cls,spec_key,kwargs,source", DEEPMIND_SOURCES)
def test_deepmind_sets_load_exact_images_masks_and_classes(tmp_path, cls, spec_key, kwargs, source):
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
    module = _prepared(tmp_path, DeepMindMultiDSpritesDataModule, "colored_on_grayscale", {}, "deepmind",
                       [scene])
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


def test_corrupt_hdf5_is_reported(tmp_path):
    path = tmp_path / "tetrominoes-full.hdf5"
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(ValueError, match="tetrominoes-full.hdf5"):
        prepare("tetrominoes", "ocl", path, tmp_path / "cache", log=lambda _: None)


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


# --- Real images: DTI-Sprites (GTSRB-8, SVHN, Weizmann Horse, image folders) -----------------

from datamodules.cub import CUBDataModule  # noqa: E402
from datamodules.flowers import FlowersDataModule  # noqa: E402
from datamodules.gtsrb import GTSRB8DataModule  # noqa: E402
from datamodules.image_folder import ImageFolderDataModule  # noqa: E402
from datamodules.lfw import FlowersLFWDataModule, LFWDataModule  # noqa: E402
from datamodules.real_data import CorruptFileError, fit  # noqa: E402
from datamodules.svhn import SVHNDataModule  # noqa: E402
from datamodules.weizmann_horse import WeizmannHorseDataModule  # noqa: E402
from tests.fixtures import images as img_fixtures  # noqa: E402

CROPPED = img_fixtures.box_mask()[:, 16:144]  # the fixture object after short side 128 + centre crop


def _batch(module, split="test"):
    module.setup()
    loader = {"train": module.train_dataloader, "val": module.val_dataloader,
              "test": module.test_dataloader}[split]()
    batch = next(iter(loader))
    check_batch(batch)
    return batch


@pytest.mark.parametrize("layout", ["official", "dti"])
def test_gtsrb8_keeps_eight_classes_in_order(tmp_path, layout):
    img_fixtures.write_gtsrb(tmp_path, [0, 3, 7, 9, 11, 17, 18, 25, 35], layout=layout)
    module = GTSRB8DataModule(root=str(tmp_path), batch_size=4)
    module.setup()
    train, val = module.datasets["train"], module.datasets["val"]
    assert len(train) == 16 and len(val) == 16 and len(module.datasets["test"]) == 16
    labels = [train[i]["label"].item() for i in range(16)]
    assert labels == [i // 2 for i in range(16)]  # class 0 dropped, 3 -> 0, ..., 35 -> 7
    item = train[2]  # GTSRB class 7
    assert item["image"].shape == (3, 28, 28)
    torch.testing.assert_close(item["image"][:, 14, 14], torch.tensor([42, 213, 100]) / 255.0)
    assert _batch(module, "train")["label"].shape == (4,)


def test_gtsrb8_roi_crop_missing_classes_and_corrupt_files(tmp_path):
    img_fixtures.write_gtsrb(tmp_path, [3, 7, 9, 11, 17, 18, 25, 35], per_class=1)
    module = GTSRB8DataModule(root=str(tmp_path), crop_roi=True)
    module.setup("test")
    roi = module.datasets["test"][0]["image"]  # the ROI is exactly the coloured box
    assert roi.shape == (3, 28, 28) and torch.allclose(roi, roi[:, :1, :1].expand_as(roi), atol=1 / 255)
    ppm = tmp_path / "GTSRB/Final_Training/Images/00003/00003_00000.ppm"  # test item 0
    ppm.write_bytes(b"P6 not an image")
    with pytest.raises(CorruptFileError, match=ppm.name):
        GTSRB8DataModule(root=str(tmp_path)).make_dataset("test")[0]
    (tmp_path / "GTSRB/Final_Training/Images/00035").rename(tmp_path / "elsewhere")
    with pytest.raises(DatasetNotFoundError, match=r"classes \[35\]"):
        GTSRB8DataModule(root=str(tmp_path)).setup()


def test_svhn_splits_labels_and_errors(tmp_path):
    written = img_fixtures.write_svhn(tmp_path, {"train": 3, "test": 2, "extra": 2})
    module = SVHNDataModule(root=str(tmp_path), batch_size=2)
    module.setup()
    assert [len(module.datasets[s]) for s in ("train", "val", "test")] == [7, 2, 5]
    first = module.datasets["test"][0]  # evaluation set = test file first, then train
    images, labels = written["test"]
    torch.testing.assert_close(first["image"], torch.from_numpy(images[..., 0]).permute(2, 0, 1) / 255.0)
    all_labels = [module.datasets["test"][i]["label"].item() for i in range(5)]
    assert all_labels == [(int(v) % 10) for v in np.concatenate([labels, written["train"][1]]).ravel()]
    assert all_labels[0] == 0  # stored as 10
    assert len(SVHNDataModule(root=str(tmp_path), use_extra=False).make_dataset("train")) == 5
    (tmp_path / "extra_32x32.mat").write_bytes(b"MATLAB garbage")
    with pytest.raises(CorruptFileError, match="extra_32x32.mat"):
        SVHNDataModule(root=str(tmp_path)).make_dataset("train")
    (tmp_path / "extra_32x32.mat").unlink()
    with pytest.raises(DatasetNotFoundError, match="extra_32x32.mat"):
        SVHNDataModule(root=str(tmp_path)).make_dataset("train")


@pytest.mark.parametrize("folders", [("images", "masks"), ("rgb", "figure_ground")])
def test_weizmann_horse_pairs_images_and_masks(tmp_path, folders):
    masks = img_fixtures.write_weizmann(tmp_path, 3, folders)
    module = WeizmannHorseDataModule(root=str(tmp_path), val_size=2, batch_size=3)
    module.setup()
    assert [len(module.datasets[s]) for s in ("train", "val", "test")] == [3, 2, 3]
    for i, expected in enumerate(masks):
        item = module.datasets["test"][i]
        np.testing.assert_array_equal(item["mask"].numpy(), expected)
        assert torch.equal(item["semantic"], item["mask"])
    assert _batch(module)["mask"].shape == (3, 128, 128)
    (tmp_path / folders[1] / "horse002.png").unlink()
    with pytest.raises(DatasetNotFoundError, match="3 images"):
        WeizmannHorseDataModule(root=str(tmp_path)).setup()


def test_fit_geometries():
    image = img_fixtures.Image.fromarray(img_fixtures.picture((255, 0, 0)))  # 160 x 128
    cropped, stretched = fit(image, 128, "nearest", crop=True), fit(image, 128, "nearest", crop=False)
    assert cropped.size == stretched.size == (128, 128)
    np.testing.assert_array_equal(np.asarray(cropped), np.asarray(image)[:, 16:144])
    np.testing.assert_array_equal(np.asarray(stretched)[:, 0], np.asarray(image)[:, 0])


def test_image_folder_with_and_without_classes(tmp_path):
    img_fixtures.write_image_folder(tmp_path / "flat", per_folder=3)
    flat = ImageFolderDataModule(root=str(tmp_path / "flat"), batch_size=3)
    batch = _batch(flat, "train")
    assert batch["image"].shape == (3, 3, 128, 128) and "label" not in batch
    img_fixtures.write_image_folder(tmp_path / "tags", classes=("cats", "dogs"))
    labelled = ImageFolderDataModule(root=str(tmp_path / "tags"), batch_size=4)
    assert _batch(labelled)["label"].tolist() == [0, 0, 1, 1]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no image files"):
        ImageFolderDataModule(root=str(tmp_path / "empty")).setup()


# --- Real images: ReDO (Flowers, CUB, LFW, Flowers+LFW) ---------------------------------------

def test_flowers_uses_redo_swapped_splits_and_foreground_rule(tmp_path):
    img_fixtures.write_flowers(tmp_path, {"trnid": [1, 2], "valid": [3], "tstid": [4, 5, 6]})
    module = FlowersDataModule(root=str(tmp_path), batch_size=3)
    module.setup()
    assert [len(module.datasets[s]) for s in ("train", "val", "test")] == [3, 1, 2]
    item = module.datasets["train"][0]  # image 4
    np.testing.assert_array_equal(item["mask"].numpy(), CROPPED)
    assert torch.equal(item["semantic"], item["mask"]) and item["label"].item() == 4
    torch.testing.assert_close(item["image"][:, 64, 64], torch.tensor([180, 64, 90]) / 255.0,
                               atol=1.5 / 255, rtol=0)  # JPEG rounding
    assert _batch(module, "train")["mask"].shape == (3, 128, 128)


def test_cub_split_file_grey_images_and_threshold(tmp_path):
    img_fixtures.write_cub(tmp_path, [0, 0, 1, 2])
    module = CUBDataModule(root=str(tmp_path), batch_size=2)
    module.setup()
    assert [len(module.datasets[s]) for s in ("train", "val", "test")] == [2, 1, 1]
    grey = module.datasets["train"][0]
    assert grey["image"].shape == (3, 128, 128) and torch.equal(grey["image"][0], grey["image"][2])
    expected = img_fixtures.box_mask()
    expected[:, img_fixtures.BOX[1]:img_fixtures.BOX[1] + 16] = False  # agreement 127 <= 0.5
    np.testing.assert_array_equal(grey["mask"].numpy(), expected[:, 16:144])
    assert grey["label"].item() == 1
    (tmp_path / "train_val_test_split.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="train_val_test_split.txt"):
        CUBDataModule(root=str(tmp_path)).setup()


LFW_SPLITS = {"train": [("Ann_Lee", 1), ("Ann_Lee", 2)], "val": [("Bo_Ma", 1)], "test": [("Cy_Od", 3)]}


def test_lfw_masks_are_hair_plus_face_and_train_has_none(tmp_path):
    img_fixtures.write_lfw(tmp_path, LFW_SPLITS)
    module = LFWDataModule(root=str(tmp_path), batch_size=2)
    module.setup()
    assert [len(module.datasets[s]) for s in ("train", "val", "test")] == [2, 1, 1]
    assert set(module.datasets["train"][0]) == {"image"}
    np.testing.assert_array_equal(module.datasets["test"][0]["mask"].numpy(), CROPPED)
    (tmp_path / "val.txt").write_text("not a valid line\n")
    with pytest.raises(CorruptFileError, match="val.txt:1"):
        LFWDataModule(root=str(tmp_path)).make_dataset("val")


def test_flowers_lfw_combines_both_with_distinct_classes(tmp_path):
    img_fixtures.write_flowers(tmp_path / "flowers", {"trnid": [1], "valid": [2], "tstid": [3]})
    img_fixtures.write_lfw(tmp_path / "lfw", LFW_SPLITS)
    module = FlowersLFWDataModule(flowers_root=str(tmp_path / "flowers"), lfw_root=str(tmp_path / "lfw"),
                                  batch_size=3, eval_batch_size=2)
    train = _batch(module, "train")
    assert set(train) == {"image", "label"} and sorted(train["label"].tolist()) == [0, 1, 1]
    val = _batch(module, "val")
    assert val["label"].tolist() == [0, 1]
    assert val["semantic"][0].unique().tolist() == [0, 1] and val["semantic"][1].unique().tolist() == [0, 2]
    assert module.num_classes == 3


@pytest.mark.parametrize("cls", [GTSRB8DataModule, SVHNDataModule, WeizmannHorseDataModule,
                                 ImageFolderDataModule, FlowersDataModule, CUBDataModule, LFWDataModule])
def test_missing_real_dataset_names_path_and_command(tmp_path, cls):
    with pytest.raises(DatasetNotFoundError) as error:
        cls(root=str(tmp_path / "absent")).setup()
    assert str((tmp_path / "absent").resolve()) in str(error.value)
    assert f"objdecomp data {cls.dataset_name}" in str(error.value)
