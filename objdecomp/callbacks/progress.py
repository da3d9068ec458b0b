"""The training progress bar: one bar over the whole run when it ends at ``max_steps``."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar


class RunProgressBar(TQDMProgressBar):
    """Lightning's bar, except that a run bounded by ``trainer.max_steps`` shows optimizer steps
    done out of ``max_steps`` with the whole run's ETA, instead of a bar restarting each epoch
    (whose ETA says nothing about when the run ends). A resumed run's bar starts at its step."""

    def _whole_run(self, trainer: pl.Trainer) -> bool:
        return trainer.max_steps > 0

    def on_train_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_start(trainer, *args)
        if self._whole_run(trainer):
            bar = self.train_progress_bar
            bar.reset(total=trainer.max_steps)
            bar.initial = bar.n = trainer.global_step
            bar.set_description("steps")

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if not self._whole_run(trainer):
            super().on_train_epoch_start(trainer, *args)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if not self._whole_run(trainer):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        bar, step = self.train_progress_bar, trainer.global_step
        if not bar.disable and self._should_update(step, bar.total):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes the bar

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._whole_run(trainer):
            super().on_train_epoch_end(trainer, pl_module)
