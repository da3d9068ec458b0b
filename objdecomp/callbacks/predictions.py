"""``objdecomp predict`` writes what ``objdecomp segment`` writes, for every image of the
datamodule's prediction split, on every process of a DDP run (each writes its own shard)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor

from objdecomp.segment import write_decomposition
from objdecomp.types import Decomposition


class DecompositionWriter(BasePredictionWriter):
    """Per image ``<index>_labels.png``, ``_overlay.png`` and ``_masks.npz`` under ``folder``,
    ``index`` being the image's position in its split (the same whatever the number of processes)."""

    def __init__(self, folder: Path):
        super().__init__(write_interval="batch")
        self.folder = Path(folder)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rank_zero_info(f"predict: decompositions written to {self.folder}")

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           prediction: Decomposition, batch_indices: Optional[Sequence[int]],
                           batch: Mapping[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_indices is None:  # only without a sampler; ours always gives dataset indices
            raise RuntimeError("predict: the dataloader gave no dataset indices to name the outputs by")
        for i, index in enumerate(batch_indices):
            write_decomposition(batch["image"][i], prediction.masks[i], prediction.background,
                                self.folder, f"{index:06d}")
