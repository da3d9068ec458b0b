"""What goes to W&B besides the scalars: decomposition grids with interactive mask overlays
(prediction and ground truth as toggleable layers) and each evaluated split's metrics table."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from pytorch_lightning.loggers import WandbLogger

from objdecomp.callbacks.pictures import DecompositionPictures, mask_overlays
from objdecomp.callbacks.results import log_metrics_table


class RecordingWandb(WandbLogger):
    """A WandbLogger that records what it is asked to log (no W&B run is started)."""

    def __init__(self):  # noqa: D107 - deliberately not starting W&B
        self.images, self.tables = [], []

    def log_image(self, key, images, step=None, **kwargs):
        self.images.append({"key": key, "images": images, "step": step, **kwargs})

    def log_table(self, key, columns=None, data=None, dataframe=None, step=None):
        self.tables.append({"key": key, "columns": columns, "data": data})


def test_overlays_carry_prediction_and_ground_truth_layers():
    images = torch.rand(2, 3, 4, 4)
    predicted = torch.tensor([[[0, 1], [2, 2]]]).repeat_interleave(2, 1).repeat_interleave(2, 2).repeat(2, 1, 1)
    truth = torch.zeros(2, 4, 4, dtype=torch.long)
    truth[1, :2] = 3
    overlays = mask_overlays(images, predicted, truth)
    assert len(overlays["images"]) == len(overlays["masks"]) == 2
    first, second = overlays["masks"]
    assert first["prediction"]["mask_data"].shape == (4, 4)
    assert first["prediction"]["class_labels"] == {0: "component 0", 1: "component 1", 2: "component 2"}
    assert first["ground_truth"]["class_labels"] == {0: "object 0"}
    assert second["ground_truth"]["class_labels"] == {0: "object 0", 3: "object 3"}
    assert "ground_truth" not in mask_overlays(images, predicted)["masks"][0]


def test_pictures_send_the_overlays_to_wandb_only():
    logger = RecordingWandb()
    other = SimpleNamespace(log_image=lambda **_: (_ for _ in ()).throw(AssertionError("not W&B")))
    trainer = SimpleNamespace(global_step=7, loggers=[other, logger])
    overlays = mask_overlays(torch.rand(3, 3, 4, 4), torch.zeros(3, 4, 4, dtype=torch.long))
    DecompositionPictures._log(trainer, "step0000007", {"decomposition": torch.rand(3, 8, 8)}, overlays)
    keys = [entry["key"] for entry in logger.images]
    assert keys == ["pictures/decomposition", "pictures/masks"]
    masks = logger.images[1]
    assert masks["step"] == 7 and len(masks["images"]) == len(masks["masks"]) == len(masks["caption"]) == 3


def test_each_split_logs_its_metrics_table():
    logger = RecordingWandb()
    log_metrics_table([logger], "train", {"train/fg_iou": 0.5, "train/ari": 0.25})
    assert logger.tables == [{"key": "train/metrics", "columns": ["metric", "value"],
                              "data": [["train/ari", 0.25], ["train/fg_iou", 0.5]]}]
