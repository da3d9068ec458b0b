"""Bad data is a clear error naming the file, never a silently wrong dataset (issue #15, item 7).

Every case is written in the dataset's real on-disk format (tests/fixtures) and then damaged the
way real downloads and copies get damaged: a missing or extra file, a bad row, an empty or
truncated file.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from datamodules.cub import CUBDataModule
from datamodules.deepmind import DeepMindTetrominoesDataModule
from datamodules.deepmind_prepare import prepare
from datamodules.flowers import FlowersDataModule
from datamodules.gtsrb import GTSRB8DataModule
from datamodules.image_folder import ImageFolderDataModule
from datamodules.mnist_source import read_idx
from datamodules.paths import DatasetNotFoundError
from datamodules.real_data import CorruptFileError, open_image
from datamodules.weizmann_horse import WeizmannHorseDataModule
from tests.fixtures import deepmind as dm_fixtures
from tests.fixtures import images as img_fixtures

GTSRB8 = [3, 7, 9, 11, 17, 18, 25, 35]


def _quiet(_):
    pass


# --- Weizmann Horse: images and masks paired by name -----------------------------------------
def test_weizmann_missing_mask_names_the_image_even_when_counts_match(tmp_path):
    img_fixtures.write_weizmann(tmp_path, 3)
    (tmp_path / "masks/horse001.png").rename(tmp_path / "masks/horse003.png")  # 3 images, 3 masks
    with pytest.raises(DatasetNotFoundError, match=r"no mask for image .*horse001\.jpg"):
        WeizmannHorseDataModule(root=str(tmp_path)).setup("test")


def test_weizmann_extra_mask_is_named(tmp_path):
    img_fixtures.write_weizmann(tmp_path, 2)
    img_fixtures.save(np.zeros((128, 128), np.uint8), tmp_path / "masks/horse007.png")
    with pytest.raises(DatasetNotFoundError, match=r"mask .*horse007\.png has no image"):
        WeizmannHorseDataModule(root=str(tmp_path)).setup("test")


def test_weizmann_pairs_by_stem_not_position(tmp_path):
    masks = img_fixtures.write_weizmann(tmp_path, 3)
    module = WeizmannHorseDataModule(root=str(tmp_path))
    samples = module.samples()
    assert [(s.image.stem, s.mask.stem) for s in samples] == [(f"horse{i:03d}",) * 2 for i in range(3)]
    module.setup("test")
    np.testing.assert_array_equal(module.datasets["test"][2]["mask"].numpy(), masks[2])


# --- CUB: bad split and label rows ------------------------------------------------------------
def _cub(tmp_path):
    img_fixtures.write_cub(tmp_path, [0, 0, 1, 2])
    return tmp_path


@pytest.mark.parametrize("rows,match", [
    ("1 0\n2 0\n3 1\n", r"train_val_test_split\.txt: no row for image id 4"),  # image 4 would vanish
    ("1 0\n2 7\n3 1\n4 2\n", r"train_val_test_split\.txt:2: the split code must be one of 0\.\.2"),
    ("1 0\n2 0\n3 1\n3 2\n", r"train_val_test_split\.txt:4: image id 3 appears twice"),
])
def test_cub_bad_split_rows_name_file_and_line(tmp_path, rows, match):
    (_cub(tmp_path) / "train_val_test_split.txt").write_text(rows)
    with pytest.raises(CorruptFileError, match=match):
        CUBDataModule(root=str(tmp_path)).setup("fit")


@pytest.mark.parametrize("rows,match", [
    ("1 2\n2 3\n4 5\n", r"image_class_labels\.txt: no row for image id 3"),
    ("1 2\n2 x\n3 4\n4 5\n", r"image_class_labels\.txt:2: the class label must be one of 1\.\.200"),
    ("1 2\n2 3\n3 201\n4 5\n", r"image_class_labels\.txt:3: .*got '201'"),
])
def test_cub_bad_label_rows_name_file_and_line(tmp_path, rows, match):
    (_cub(tmp_path) / "image_class_labels.txt").write_text(rows)
    with pytest.raises(CorruptFileError, match=match):
        CUBDataModule(root=str(tmp_path)).setup("test")


# --- GTSRB-8: all eight classes --------------------------------------------------------------
def test_gtsrb_empty_class_folder_is_named(tmp_path):
    files = img_fixtures.write_gtsrb(tmp_path, GTSRB8, per_class=1)
    files[9][0].unlink()  # the folder of class 9 stays, empty but for its CSV
    with pytest.raises(DatasetNotFoundError, match=r"00009.* holds no images"):
        GTSRB8DataModule(root=str(tmp_path)).setup("test")


# --- DeepMind caches: empty TFRecords, short or out-of-range HDF5, truncated PNGs ----------------
def test_empty_tfrecord_prepares_nothing_and_says_so(tmp_path):
    path = dm_fixtures.write_tfrecord(tmp_path / "empty.tfrecords", "tetrominoes", [])
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=r"empty\.tfrecords: prepared 0 images from 0 records"):
        prepare("tetrominoes", "deepmind", path, cache, log=_quiet)
    assert sorted(p.name for p in cache.iterdir()) == []  # no meta.json, no part files left


def _hdf5(tmp_path, count=3):
    rng = np.random.default_rng(0)
    scenes = [dm_fixtures.make_scene("tetrominoes", 3, rng) for _ in range(count)]
    return dm_fixtures.write_ocl_hdf5(tmp_path / "tetrominoes-full.hdf5", "tetrominoes", scenes)


def test_hdf5_with_too_few_mask_rows_names_file_and_dataset(tmp_path):
    import h5py

    path = _hdf5(tmp_path)
    with h5py.File(path, "a") as f:
        short = f["mask"][:2]
        del f["mask"]
        f["mask"] = short
    with pytest.raises(ValueError, match=r"tetrominoes-full\.hdf5: dataset 'mask' has 2 rows but 'image' has 3"):
        prepare("tetrominoes", "ocl", path, tmp_path / "cache", log=_quiet)


def test_hdf5_entity_id_out_of_range_names_file_and_record(tmp_path):
    import h5py

    path = _hdf5(tmp_path)
    with h5py.File(path, "a") as f:
        mask = f["mask"][:]
        mask[1, 0, 0] = 9  # Tetrominoes has 4 entities
        f["mask"][:] = mask
    with pytest.raises(ValueError, match=r"tetrominoes-full\.hdf5: record 1: mask holds entity id 9"):
        prepare("tetrominoes", "ocl", path, tmp_path / "cache", log=_quiet)


def test_truncated_png_of_the_dti_source_names_the_file(tmp_path):
    rng = np.random.default_rng(0)
    scenes = [dm_fixtures.make_scene("tetrominoes", 3, rng) for _ in range(2)]
    folder = dm_fixtures.write_dti_pngs(tmp_path / "dti", scenes, [s.ids for s in scenes])
    img_fixtures.truncate(folder / "masks/1.png")
    module = DeepMindTetrominoesDataModule(root=str(tmp_path / "t"), source="dti")
    with pytest.raises(CorruptFileError, match=r"masks/1\.png"):
        prepare("tetrominoes", "dti", folder, module.cache_dir, log=_quiet)


def test_truncated_png_in_an_image_folder_names_the_file(tmp_path):
    img_fixtures.save(img_fixtures.picture((200, 10, 10)), tmp_path / "images/a.png")
    img_fixtures.truncate(tmp_path / "images/a.png")
    with pytest.raises(CorruptFileError, match=r"images/a\.png"):
        ImageFolderDataModule(root=str(tmp_path / "images")).make_dataset("train")[0]


def test_truncated_gzip_idx_names_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + bytes(12) + bytes(range(256)) * 40))
    img_fixtures.truncate(path)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        read_idx(path)


# --- 16-bit images are scaled, not clipped ----------------------------------------------------
def test_sixteen_bit_png_is_scaled_to_eight_bits(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 16).round().astype(np.uint16), (16, 1))
    path = img_fixtures.save_png16(ramp, tmp_path / "ramp.png")
    grey = np.asarray(open_image(path, "L"))
    np.testing.assert_array_equal(grey, np.round(ramp / 257).astype(np.uint8))  # PIL alone: 255 from 255/65535 on
    assert np.asarray(open_image(path, "L", labels=True))[0, 1] == 255  # label maps keep values (clipped)


# --- Flowers: labels for every image ----------------------------------------------------------
def test_flowers_short_imagelabels_is_named(tmp_path):
    from scipy.io import savemat

    img_fixtures.write_flowers(tmp_path, {"trnid": [1, 2], "valid": [3], "tstid": [4, 5]})
    savemat(tmp_path / "imagelabels.mat", {"labels": np.array([[1, 2, 3]])})
    with pytest.raises(CorruptFileError, match=r"imagelabels\.mat holds 3 labels, but setid\.mat names image 5"):
        FlowersDataModule(root=str(tmp_path)).setup("fit")


# --- a training split smaller than one batch ------------------------------------------------
def test_training_split_smaller_than_one_batch_is_an_error_at_setup(tmp_path):
    img_fixtures.write_weizmann(tmp_path, 3)
    with pytest.raises(ValueError, match=r"'train' split has 3 images, fewer than one training batch "
                                         r"\(batch_size 4 x 1 process"):
        WeizmannHorseDataModule(root=str(tmp_path), batch_size=4).setup("fit")
    WeizmannHorseDataModule(root=str(tmp_path), batch_size=3).setup("fit")  # one whole batch is enough
    WeizmannHorseDataModule(root=str(tmp_path), batch_size=4).setup("test")  # evaluation keeps the last one


class _OneWeight(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch, index):
        return (batch["image"].mean() - self.weight) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_fit_on_a_split_smaller_than_one_batch_fails_instead_of_training_nothing(tmp_path):
    img_fixtures.write_weizmann(tmp_path / "horse", 3)
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, default_root_dir=str(tmp_path))
    data = WeizmannHorseDataModule(root=str(tmp_path / "horse"), batch_size=8)
    with pytest.raises(ValueError, match="fewer than one training batch"):
        trainer.fit(_OneWeight(), datamodule=data)
    assert trainer.global_step == 0
