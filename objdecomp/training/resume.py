"""Exact resume: the random number generators' states travel with every checkpoint.

Lightning restores weights, optimizers, loops and the datamodule, but not the global RNGs, so
a stochastic method (DTI's mask noise, ReDO's region and code draws) resumed from a checkpoint
would draw other numbers than the run it continues. A method that wants exact resume returns
:class:`ExactResume` from ``configure_callbacks``.
"""

from __future__ import annotations

import random
from typing import Any, Dict

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info

from objdecomp.schedules import counters


class ExactResume(pl.Callback):
    """Saves the torch, CUDA, NumPy and Python RNG states under ``checkpoint["rng_states"]`` and
    restores them with the checkpoint; says where a resumed run starts again."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: Dict[str, Any]) -> None:
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: Dict[str, Any]) -> None:
        if "rng_states" in checkpoint:
            restore_rng_states(checkpoint["rng_states"])

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
