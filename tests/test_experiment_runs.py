"""Slow tier: every experiment runs through the real ``objdecomp fit`` entry point for two optimizer
steps on tiny data, then ``objdecomp test`` on its checkpoint writes a results JSON.

Tiny data: the procedural sets with a few images (and 32x32 where the size is an option); the
real sets written by tests/fixtures in their published on-disk layouts under a temporary root.
The model is the experiment's own (paper widths); only data, batch and the run's length change.
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import pytest
import yaml

from objdecomp.__main__ import main
from objdecomp.cli import experiment_config_files, experiment_names
from objdecomp.paths import EXPERIMENTS
from tests.fixtures import deepmind as dm_fixtures
from tests.fixtures import images as img_fixtures
from tests.fixtures import lsun as lsun_fixtures

# Two optimizer steps (one batch for GAN methods), validated after every batch, briefly tested.
RUN = ["--trainer.max_steps=2", "--trainer.max_epochs=-1", "--trainer.max_time=null",
       "--trainer.val_check_interval=1", "--trainer.check_val_every_n_epoch=null",
       "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=2",
       "--trainer.num_sanity_val_steps=0", "--trainer.accelerator=cpu", "--trainer.devices=1",
       "--trainer.logger=false", "--trainer.enable_progress_bar=false",
       "--trainer.enable_model_summary=false"]
PROCEDURAL = {"train_size": 8, "val_size": 4, "test_size": 4, "image_size": 32}
LFW_PEOPLE = {"train": [("Ann_Lee", i) for i in range(1, 5)],
              "val": [("Bo_Ma", i) for i in range(1, 4)], "test": [("Cy_Od", 1), ("Cy_Od", 2)]}


def _cub(root: Path) -> Dict[str, object]:
    img_fixtures.write_cub(root, [0, 0, 0, 0, 1, 1, 1, 2, 2])  # ReDO's split file: 0 train, 1 val, 2 test
    return {"root": str(root), "image_size": 32}


def _flowers(root: Path) -> Dict[str, object]:
    img_fixtures.write_flowers(root, {"trnid": [1, 2, 3, 4], "valid": [5, 6, 7], "tstid": [8, 9, 10, 11]})
    return {"root": str(root), "image_size": 32}


def _lfw(root: Path) -> Dict[str, object]:
    img_fixtures.write_lfw(root, LFW_PEOPLE)
    return {"root": str(root), "image_size": 32}


def _flowers_lfw(root: Path) -> Dict[str, object]:
    flowers, lfw = _flowers(root / "flowers"), _lfw(root / "lfw")
    return {"flowers_root": flowers["root"], "lfw_root": lfw["root"], "image_size": 32}


def _gtsrb8(root: Path) -> Dict[str, object]:
    img_fixtures.write_gtsrb(root, [3, 7, 9, 11, 17, 18, 25, 35], per_class=1)
    return {"root": str(root), "val_size": 4}


def _svhn(root: Path) -> Dict[str, object]:
    img_fixtures.write_svhn(root, {"train": 4, "test": 100, "extra": 2})  # val: >= 100 test images
    return {"root": str(root)}


def _weizmann_horse(root: Path) -> Dict[str, object]:
    img_fixtures.write_weizmann(root, 6)
    return {"root": str(root), "val_size": 2}


def _image_folder(root: Path) -> Dict[str, object]:
    img_fixtures.write_image_folder(root, classes=("cats", "dogs"), per_folder=3)
    return {"root": str(root), "val_size": 2, "image_size": 32}


def _clevr6(root: Path) -> Dict[str, object]:
    from datamodules.deepmind_prepare import prepare

    rng = np.random.default_rng(0)
    inside = [(60, 100, 40, 30), (120, 180, 30, 50)]  # within CLEVR6's crop
    scenes = [dm_fixtures.make_scene("clevr6", 2, rng, boxes=inside) for _ in range(8)]
    root.mkdir(parents=True)
    records = dm_fixtures.write_tfrecord(root / "clevr6.tfrecords", "clevr6", scenes)
    prepare("clevr6", "deepmind", records, root / "deepmind", log=lambda _: None)
    return {"root": str(root), "source": "deepmind", "val_size": 2, "test_size": 2}


def _deepmind(spec_key: str, cache: str) -> Callable[[Path], Dict[str, object]]:
    """A prepared ``deepmind`` cache of 8 TFRecord scenes (Tetrominoes, Multi-dSprites)."""
    def write(root: Path) -> Dict[str, object]:
        from datamodules.deepmind_prepare import prepare

        rng = np.random.default_rng(0)
        scenes = [dm_fixtures.make_scene(spec_key, 2, rng) for _ in range(8)]
        root.mkdir(parents=True)
        records = dm_fixtures.write_tfrecord(root / "scenes.tfrecords", spec_key, scenes)
        prepare(spec_key, "deepmind", records, root / cache, log=lambda _: None)
        return {"root": str(root), "source": "deepmind", "val_size": 2, "test_size": 2}
    return write


def _multi_dsprites_variants(root: Path) -> Dict[str, object]:
    """Prepared caches of both coloured Multi-dSprites variants (DTI's, CIS's) in one root."""
    options = _deepmind("colored_on_grayscale", "deepmind-colored_on_grayscale")(root)
    _deepmind("colored_on_colored", "deepmind-colored_on_colored")(root / "colored")
    (root / "colored" / "deepmind-colored_on_colored").rename(root / "deepmind-colored_on_colored")
    return options


def _flying_animals(root: Path) -> Dict[str, object]:
    from tests.fixtures.flying_animals import write_flying_animals

    write_flying_animals(root)
    return {"root": str(root), "train_size": 8, "val_size": 2, "test_size": 2}


def _lsun(root: Path) -> Dict[str, object]:
    from datamodules.lsun import pseudo_mask_folder, save_pseudo_masks

    records = {category: lsun_fixtures.write_lsun(root, category, range(10 + 40 * start, 16 + 40 * start))
               for start, category in enumerate(("car", "horse", "chair", "bird"))}
    car = [key for key, _ in records["car"][:4]]  # Table 2's Mask R-CNN masks: cars in two images
    masks = np.zeros((4, 16, 16), bool)
    masks[:2, 4:12, 2:14] = True
    save_pseudo_masks(pseudo_mask_folder(root, "car"), car, masks, masks.any(axis=(1, 2)))
    return {"root": str(root), "image_size": 32, "max_images": 6, "eval_images": 4}


REAL_DATA: Dict[str, Callable[[Path], Dict[str, object]]] = {
    "datamodules.flying_animals.FlyingAnimalsDataModule": _flying_animals,
    "datamodules.cub.CUBDataModule": _cub,
    "datamodules.lsun.LSUNDataModule": _lsun,
    "datamodules.flowers.FlowersDataModule": _flowers,
    "datamodules.lfw.LFWDataModule": _lfw,
    "datamodules.lfw.FlowersLFWDataModule": _flowers_lfw,
    "datamodules.gtsrb.GTSRB8DataModule": _gtsrb8,
    "datamodules.svhn.SVHNDataModule": _svhn,
    "datamodules.weizmann_horse.WeizmannHorseDataModule": _weizmann_horse,
    "datamodules.image_folder.ImageFolderDataModule": _image_folder,
    "datamodules.deepmind.CLEVR6DataModule": _clevr6,
    "datamodules.deepmind.DeepMindTetrominoesDataModule": _deepmind("tetrominoes", "deepmind"),
    "datamodules.deepmind.DeepMindMultiDSpritesDataModule": _multi_dsprites_variants,
    "datamodules.deepmind.ObjectsRoomDataModule": _deepmind("objects_room", "deepmind"),
}


def data_class_path(name: str) -> str:
    """The datamodule the experiment's files name last (the one the CLI instantiates)."""
    paths = [(yaml.safe_load(f.read_text()) or {}).get("data", {}).get("class_path")
             for f in experiment_config_files(name)]
    return [p for p in paths if p][-1]


def tiny_data(class_path: str, root: Path, labelled: bool) -> List[str]:
    """``--data.init_args.*`` flags that give the experiment's datamodule a few images."""
    if class_path in REAL_DATA:
        options = REAL_DATA[class_path](root)
    else:
        module, _, name = class_path.rpartition(".")
        cls = getattr(__import__(module, fromlist=[name]), name)
        accepted = inspect.signature(cls.__init__).parameters
        assert "train_size" in accepted, f"no tiny data for {class_path}: add a fixture to REAL_DATA"
        options = {k: v for k, v in PROCEDURAL.items() if k in accepted}
    options["batch_size"] = 4
    if labelled:  # ReDO's supervised baseline: N labelled images of the tiny split
        options.update(labelled_subset=2, min_epoch_items=4)
    return [f"--data.init_args.{key}={value}" for key, value in options.items()]


# Flags a config needs here: what they shorten or switch off is evaluation-time work.
SHORTENED = ["--model.init_args.chunk_iterations=2"]  # per-chunk encoders: 1000 iterations a chunk
# PerturbGAN's generated-scene evaluators (Tables 1 and 3) need Mask R-CNN's and Inception's
# downloaded weights; tests/test_perturbgan.py runs them with stand-in networks.
OFFLINE = ["--model.init_args.generated_metrics=[]"]


def evaluation_flags(name: str) -> List[str]:
    chain = "".join(f.read_text() for f in experiment_config_files(name))
    return (SHORTENED if "chunk_iterations" in chain else []) + (OFFLINE if "generated_metrics" in chain else [])

EXPERIMENTS_RUN = experiment_names()


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS_RUN)
def test_experiment_fits_and_tests_through_the_cli(name: str, tmp_path: Path, monkeypatch):
    results = tmp_path / "results"
    monkeypatch.setenv("OBJDECOMP_RESULTS", str(results))
    monkeypatch.setattr("sys.argv", ["objdecomp"])
    config = str(EXPERIMENTS / f"{name}.yaml")
    labelled = any("labelled_subset" in f.read_text() for f in experiment_config_files(name))
    data = tiny_data(data_class_path(name), tmp_path / "data", labelled) + evaluation_flags(name)

    main(["fit", "--config", config, *data, *RUN])
    checkpoints = sorted(results.glob(f"{name}/*/checkpoints/last.ckpt"))
    assert len(checkpoints) == 1, f"fit left no last.ckpt under {results / name}"
    main(["test", "--config", config, *data, *RUN, f"--ckpt_path={checkpoints[0]}"])

    files = sorted((results / name).glob("*.json"))
    assert len(files) == 1, f"objdecomp test wrote no results JSON under {results / name}"
    record = json.loads(files[0].read_text())
    assert record["experiment"] == name and record["split"] == "test"
    assert record["metrics"], "the results JSON holds no metric"
    infinite = {k: v for k, v in record["metrics"].items() if not math.isfinite(v)}
    assert not infinite, f"non-finite metrics: {infinite}"
