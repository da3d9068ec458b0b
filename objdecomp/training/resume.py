"""Exact resume: a resumed run continues as the uninterrupted one would, bit for bit on a CPU.

Lightning restores weights, optimizers, loops and the datamodule (whose training sampler keeps
its position inside an epoch: datamodules/base.py), but not the global RNGs, so a stochastic
method (DTI's mask noise, ReDO's region and code draws) resumed from a checkpoint would draw
other numbers than the run it continues. Nor does it call ``on_train_epoch_start`` for the epoch
a resumed run starts in (mid-epoch, or the next one when the checkpoint was written at an
epoch's last batch), so epoch-start schedules (curricula, sprite freezes) that the method sets
there would slip. A method that wants exact resume returns :class:`ExactResume` from
``configure_callbacks``.
"""

from __future__ import annotations

import random
from typing import Any, Dict, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info

from objdecomp.schedules import counters


class ExactResume(pl.Callback):
    """Saves the torch, CUDA, NumPy and Python RNG states under ``checkpoint["rng_states"]``;
    before the first batch of a fit resumed from such a checkpoint, restores them and replays the
    module hooks that the saved state had not yet run and that Lightning does not run on resume;
    says where a resumed run starts again.

    The RNGs are restored there, not when the checkpoint is loaded, so that whatever the start
    of a fit draws (a loader's base seed, ReDO's stream of real images, a sanity check) leaves
    the first batch's draws as they were in the uninterrupted run. Then the replays, in that
    run's order:

    - the module's ``on_train_batch_end`` of the saved batch, when the checkpoint was written
      at that batch's end (the periodic and end-of-run checkpoints): Lightning calls every
      callback's hook, and so writes the checkpoint, before the module's (DTI's sprite
      reassignment at a checkpoint step would be lost);
    - its ``on_train_epoch_end``, when that batch was its epoch's last;
    - its ``on_train_epoch_start``, for the epoch the resumed fit starts in (curricula, freezes).

    ``outputs`` and ``batch`` of the replayed ``on_train_batch_end`` are None.
    """

    def __init__(self):
        self._epoch_started: Optional[int] = None
        self._batch_end_pending: Optional[int] = None  # batch index whose module hook is still to run
        self._restored: Optional[Dict[str, Any]] = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started = trainer.current_epoch

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._batch_end_pending = None
        restored, self._restored = self._restored, None
        if restored is not None:
            self._resume_where_saved(trainer, pl_module, restored)
        if self._epoch_started != trainer.current_epoch:  # a resumed run: Lightning skipped it
            self._epoch_started = trainer.current_epoch
            pl_module.on_train_epoch_start()

    @staticmethod
    def _resume_where_saved(trainer: pl.Trainer, pl_module: pl.LightningModule,
                            restored: Dict[str, Any]) -> None:
        if restored.get("rng_states") is not None:
            restore_rng_states(restored["rng_states"])
        if restored.get("batch_end_pending") is not None:
            pl_module.on_train_batch_end(None, None, restored["batch_end_pending"])
        if restored.get("epoch", trainer.current_epoch) != trainer.current_epoch:
            pl_module.on_train_epoch_end()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        # Checkpoint callbacks run after this one and before the module's own hook.
        self._batch_end_pending = batch_idx

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batch_end_pending = None  # the module's on_train_batch_end has run

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batch_end_pending = None

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: Dict[str, Any]) -> None:
        checkpoint["rng_states"] = rng_states()
        checkpoint["exact_resume"] = {"batch_end_pending": self._batch_end_pending,
                                      "epoch": trainer.current_epoch}

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: Dict[str, Any]) -> None:
        self._restored = {"rng_states": checkpoint.get("rng_states"), **checkpoint.get("exact_resume", {})}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path:
            batches, epoch = counters(pl_module)
            rank_zero_info(f"resumed from {trainer.ckpt_path} at global step {trainer.global_step} "
                           f"(batch step {batches}, epoch {epoch})")


def rng_states() -> Dict[str, Any]:
    """The global RNG states, as tensors and plain Python values only, so that the checkpoint
    loads with ``torch.load(weights_only=True)``."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: Dict[str, Any]) -> None:
    """Set the global RNGs to what :func:`rng_states` returned."""
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    random.setstate(states["python"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
