"""A run never loses work: a checkpoint of the last step at every end of a fit, written atomically.

- :class:`RunCheckpoint`: Lightning's ``ModelCheckpoint`` whose ``last.ckpt`` is rewritten when a
  fit ends at a step it has not saved (``max_steps`` off the interval, ``max_time``, a stop
  signal; Lightning's own skips that save once any ``last.ckpt`` exists), and whose files are
  written by :class:`AtomicCheckpointIO`.
- :class:`AtomicCheckpointIO`: a checkpoint is written to a temporary file beside its target and
  renamed over it. Lightning's writer stages the file in ``$TMPDIR`` and moves it, which is a
  copy when ``$TMPDIR`` is on another filesystem than the results: ``kill -9`` during that copy
  leaves a truncated ``last.ckpt``. A rename within one directory is atomic.
- :class:`GracefulStop`: SIGTERM (a cluster's pre-emption) or SIGINT (Ctrl+C) stops the fit at
  the end of the running batch, so that the checkpoint above holds a consistent state; a second
  signal stops at once.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any, Dict, Optional

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_info

TEMPORARY_SUFFIX = ".tmp"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes ``path`` through ``.<name>.<pid>.tmp`` in the same folder, then renames it."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if "://" in str(path):  # a remote store: Lightning's writer knows it
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")
        try:
            with open(temporary, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        _sync_directory(path.parent)


def _sync_directory(folder: Path) -> None:
    """Make the rename itself durable (a no-op where directories cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` (same arguments) that saves ``last.ckpt`` at the last step of every
    fit and writes every checkpoint of the trainer atomically."""

    _last_saved_step: Optional[int] = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if trainer.is_global_zero and self.dirpath and Path(self.dirpath).is_dir():
            for leftover in Path(self.dirpath).glob(f".*{TEMPORARY_SUFFIX}"):  # of a killed writer
                leftover.unlink(missing_ok=True)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._last_saved_step = trainer.global_step if trainer.ckpt_path else None

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: Dict[str, Any]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        # The fit ends after this batch (max_steps, or a stop that Timer or GracefulStop, which
        # Lightning calls before any checkpoint callback, just asked for): save it now, while the
        # loops still say "inside this epoch". Saved at on_train_end, the same state would resume
        # as if the epoch were complete, skipping its tail.
        if self.save_last and (trainer.should_stop or 0 < trainer.max_steps <= trainer.global_step):
            self._save_last_step(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_last:  # any other end (max_epochs, early stopping after validation)
            self._save_last_step(trainer)

    def _save_last_step(self, trainer: pl.Trainer) -> None:
        if self._last_saved_step == trainer.global_step:
            return
        candidates = self._monitor_candidates(trainer)
        if self.save_last == "link" and self._last_global_step_saved != trainer.global_step:
            self._save_checkpoint(trainer, self.format_checkpoint_name(candidates))  # to link to
        self._save_last_checkpoint(trainer, candidates)


class GracefulStop(pl.Callback):
    """The first SIGTERM or SIGINT ends the fit after the running batch (every DDP rank at the
    same batch), which then saves its last step; :attr:`received` tells the command which signal
    stopped it. A second signal raises ``KeyboardInterrupt`` at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = {number: signal.signal(number, self._on_signal) for number in self.SIGNALS}

    def _on_signal(self, number: int, frame) -> None:
        if self.received is not None:
            self._restore()
            raise KeyboardInterrupt
        self.received = number
        rank_zero_info(f"\n{signal.Signals(number).name} received: stopping after this batch and saving "
                       "last.ckpt (send it again to stop at once)")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        stop = self.received is not None
        if trainer.world_size > 1:  # any rank's signal stops every rank at this batch
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            self.received = self.received or signal.SIGTERM
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}
