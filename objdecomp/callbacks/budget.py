"""A training budget in seconds of training batches or in batches, for benchmarks and comparisons."""

from __future__ import annotations

import time
from typing import Optional

import pytorch_lightning as pl


class TrainingBudget(pl.Callback):
    """Stops fit after ``seconds`` spent in training batches or after ``steps`` of them.

    Only the training batches are charged, so that validation, pictures and checkpoints cost a
    run nothing and two methods given the same budget get the same time to learn.
    """

    def __init__(self, seconds: Optional[float] = None, steps: Optional[int] = None):
        self.limit_s, self.limit_steps = seconds, steps
        self.seconds, self.batches, self._started = 0.0, 0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds += time.perf_counter() - self._started
        self.batches += 1
        spent = (self.limit_steps is not None and self.batches >= self.limit_steps) or (
            self.limit_s is not None and self.seconds >= self.limit_s)
        trainer.should_stop = trainer.should_stop or spent
