"""`objdecomp edit` never gives a silently wrong picture (issue #15, item 9): 16-bit inputs are
scaled, not clipped; malformed values are usage errors naming the expected form; an input whose
size or aspect differs from the training images' is announced."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torchvision.utils import save_image

from objdecomp.methods.dti_sprites import editing
from objdecomp.methods.dti_sprites.editing import Edit, load_image, main
from tests.fixtures import images as img_fixtures
from tests.test_dti_sprites import _positioned_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 16x16 RGB model with ``col-pos`` layer transformations, saved as Lightning saves it."""
    model = _positioned_model()
    path = tmp_path_factory.mktemp("edit") / "model.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": pl.__version__}, path)
    return path


def _red_square(path):
    image = torch.zeros(3, 16, 16)
    image[0, 6:10, 6:10] = 1.0
    save_image(image, path)
    return path


def _usage_error(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2  # argparse's usage error, not a traceback
    return capsys.readouterr().err


def test_sixteen_bit_png_is_scaled_not_white(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 16).round().astype(np.uint16), (16, 1))
    path = img_fixtures.save_png16(ramp, tmp_path / "ramp16.png")
    image = load_image(str(path), SimpleNamespace(channels=3, image_size=16))  # 16x16: no warning
    expected = torch.from_numpy(np.round(ramp / 257) / 255).float()
    torch.testing.assert_close(image, expected.expand(3, 16, 16), atol=1e-6, rtol=0)
    assert image.mean() < 0.6  # PIL's own conversion clips: 15 of 16 columns white


@pytest.mark.parametrize("flag,value,expected", [
    ("--translate", "0.1", "expected dx,dy"),
    ("--translate", "0.1,0.2,0.3", "expected dx,dy"),
    ("--scale", "0", "positive size factor"),
    ("--scale", "-2", "positive size factor"),
    ("--scale", "nan", "one number"),
    ("--color", "1,x,0", "one number in [0, 1] per channel"),
    ("--color", "2,0,0", r"colour values must be in [0, 1]"),
])
def test_malformed_values_are_usage_errors_naming_the_form(tmp_path, capsys, flag, value, expected):
    err = _usage_error(capsys, ["--checkpoint", "absent.ckpt", "--image", "absent.png",
                                "--output", str(tmp_path / "out.png"), f"{flag}={value}"])
    assert f"argument {flag}" in err and expected in err


@pytest.mark.parametrize("flag,value,expected", [
    ("--color", "1,0", "color needs 3 values"),
    ("--layer", "5", "layer must be in 1..1"),
    ("--sprite", "9", "sprite must be in 0..2"),
])
def test_values_wrong_for_the_model_are_usage_errors(tmp_path, capsys, checkpoint, flag, value, expected):
    image = _red_square(tmp_path / "in.png")
    err = _usage_error(capsys, ["--checkpoint", str(checkpoint), "--image", str(image),
                                "--output", str(tmp_path / "out.png"), flag, value])
    assert expected in err and not (tmp_path / "out.png").exists()


def test_unreadable_image_is_a_usage_error_naming_it(tmp_path, capsys, checkpoint):
    image = img_fixtures.truncate(_red_square(tmp_path / "in.png"))
    err = _usage_error(capsys, ["--checkpoint", str(checkpoint), "--image", str(image), "--list"])
    assert "in.png" in err


def test_the_api_checks_edits_too():
    model = _positioned_model()
    with pytest.raises(ValueError, match="translate needs two values"):
        editing.check_edit(model, Edit(layer=1, translate=(0.1,)))
    with pytest.raises(ValueError, match="scale must be a positive factor"):
        editing.check_edit(model, Edit(layer=1, scale=0.0))
    editing.check_edit(model, Edit(layer=1, translate=(0.1, 0.0), scale=2.0, color=(1.0, 0.0, 0.0)))


@pytest.mark.parametrize("size,expected", [((64, 32), "stretched to 16x16"), ((32, 32), "grid of several scenes"),
                                           ((16, 16), None)])
def test_an_input_unlike_the_training_images_is_announced(tmp_path, size, expected):
    width, height = size
    path = img_fixtures.save(img_fixtures.picture((200, 10, 10), size=(height, width), box=(0, 0, 4, 4)),
                             tmp_path / "grid.png")
    said = []
    image = load_image(str(path), SimpleNamespace(channels=3, image_size=16), warn=said.append)
    assert image.shape == (3, 16, 16)
    if expected is None:
        assert said == []
    else:
        assert len(said) == 1 and expected in said[0] and f"{width}x{height}" in said[0]


def test_edit_command_prints_the_warning_and_still_edits(tmp_path, capsys, checkpoint):
    grid = torch.zeros(3, 16, 32)  # two scenes side by side
    grid[0, 6:10, 6:10] = grid[0, 6:10, 22:26] = 1.0
    save_image(grid, tmp_path / "grid.png")
    assert main(["--checkpoint", str(checkpoint), "--image", str(tmp_path / "grid.png"),
                 "--output", str(tmp_path / "out.png"), "--translate", "0.25,0"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "32x16" in err and (tmp_path / "out.png").exists()
