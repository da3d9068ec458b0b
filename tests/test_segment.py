"""``objdecomp segment``: every method's decomposition of a user's own images, written per image
as a palette label map, an overlay and soft masks at the image's own size; unreadable files are
named and skipped, nothing else stops."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from objdecomp.__main__ import main
from objdecomp.segment import palette_bytes
from tests.test_methods import tiny_dti_sprites


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = tiny_dti_sprites()
    path = tmp_path / "model.ckpt"
    hparams = {**dict(model.hparams), "_class_path": "objdecomp.methods.dti_sprites.DTISprites"}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams,
                "pytorch-lightning_version": pl.__version__}, path)
    return path


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "mine"
    (folder / "holiday").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(folder / "wide.png")
    Image.fromarray(rng.integers(0, 65535, (30, 20), dtype=np.uint16)).save(folder / "grey16.png")
    Image.fromarray(rng.integers(0, 255, (9, 9, 4), dtype=np.uint8), "RGBA").save(
        folder / "holiday" / "alpha.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("not an image, not looked at")
    return folder


def test_every_readable_image_gets_its_outputs_at_its_own_size(tmp_path, checkpoint, images, capsys):
    output = tmp_path / "out"
    main(["segment", "--checkpoint", str(checkpoint), "--input", str(images), "--output", str(output),
          "--batch-size", "2", "--no-progress"])  # exit status 0: no SystemExit
    said = capsys.readouterr()
    assert "3 image(s) segmented" in said.out and "1 unreadable file(s) skipped" in said.out
    assert said.err.count("skipped:") == 1 and "cannot decode image" in said.err and "broken.jpg" in said.err
    for name, (height, width) in {"wide": (24, 40), "grey16": (30, 20), "holiday/alpha": (9, 9)}.items():
        labels = Image.open(output / f"{name}_labels.png")
        assert labels.mode == "P" and labels.size == (width, height)
        assert Image.open(output / f"{name}_overlay.png").size == (width, height)
        saved = np.load(output / f"{name}_masks.npz")
        masks = saved["masks"].astype(np.float32)
        assert masks.shape == (3, height, width)  # background + 2 object layers
        assert np.allclose(masks.sum(0), 1, atol=2e-3)
        owner = np.take_along_axis(masks, saved["labels"][None].astype(np.int64), 0)[0]
        assert (owner >= masks.max(0) - 1e-3).all()  # the label is the owning component (float16 ties)
        assert (np.asarray(labels) == saved["labels"]).all()
        assert saved["background"].tolist() == [True, False, False]


def test_label_map_colours_are_the_grids_colours():
    flat = palette_bytes(3)
    assert flat[:3] == [0, 0, 0] and len(flat) == 9 and flat[3:6] != flat[6:9]


@pytest.mark.parametrize("problem, message", [
    ("no_checkpoint", "no checkpoint at"), ("no_class", "names no model class"),
    ("no_input", "does not exist"), ("empty_folder", "no images"),
])
def test_bad_arguments_are_one_clear_error(tmp_path, checkpoint, images, problem, message):
    args = {"--checkpoint": str(checkpoint), "--input": str(images), "--output": str(tmp_path / "out")}
    if problem == "no_checkpoint":
        args["--checkpoint"] = str(tmp_path / "missing.ckpt")
    elif problem == "no_class":
        saved = torch.load(checkpoint, weights_only=True)
        del saved["hyper_parameters"]["_class_path"]
        torch.save(saved, checkpoint)
    elif problem == "no_input":
        args["--input"] = str(tmp_path / "nowhere")
    else:
        (tmp_path / "empty").mkdir()
        args["--input"] = str(tmp_path / "empty")
    with pytest.raises(SystemExit, match=message):
        main(["segment", *[part for pair in args.items() for part in pair]])
    assert not (tmp_path / "out").exists()


def test_all_unreadable_fails(tmp_path, checkpoint):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(SystemExit) as ended:
        main(["segment", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "bad.png"),
              "--output", str(tmp_path / "out"), "--no-progress"])
    assert ended.value.code == 1


@pytest.mark.slow
def test_predict_writes_what_segment_writes_for_a_real_run(tmp_path, monkeypatch, images):
    """``objdecomp fit`` for two steps, then ``predict`` over the test split and ``segment`` over a
    folder with the checkpoint it wrote (so the model class comes from a real checkpoint)."""
    from objdecomp.paths import EXPERIMENTS
    from tests.test_experiment_runs import RUN, data_class_path, tiny_data

    name = "quick/dti_sprites_tetrominoes"
    monkeypatch.setenv("OBJDECOMP_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr("sys.argv", ["objdecomp"])
    config = ["--config", str(EXPERIMENTS / f"{name}.yaml")]
    data = tiny_data(data_class_path(name), tmp_path / "data", labelled=False)
    main(["fit", *config, *data, *RUN])
    checkpoint = next((tmp_path / "results").glob(f"{name}/*/checkpoints/last.ckpt"))

    predictions = tmp_path / "predictions"
    main(["predict", *config, *data, *RUN, f"--ckpt_path={checkpoint}", f"--predictions_dir={predictions}"])
    written = sorted(p.name for p in predictions.iterdir())
    assert written == [f"{i:06d}_{kind}" for i in range(4)
                       for kind in ("labels.png", "masks.npz", "overlay.png")]  # the 4 test images
    assert np.load(predictions / "000003_masks.npz")["masks"].shape[1:] == (35, 35)  # Tetrominoes

    main(["segment", "--checkpoint", str(checkpoint), "--input", str(images / "wide.png"),
          "--output", str(tmp_path / "mine"), "--no-progress"])
    assert Image.open(tmp_path / "mine" / "wide_labels.png").size == (40, 24)
