"""The non-finite-loss guard: a NaN or infinite loss term stops the run, with what caused it.

:meth:`~objdecomp.methods.base.DecompositionModule.log_losses` hands every loss term to the
trainer's loss checks before logging it; :class:`NonFiniteLossGuard` is such a check. It raises
before the term is back-propagated, so the weights it saves are those that produced it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import pytorch_lightning as pl
import torch
from torch import Tensor


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the step and the term."""


class NonFiniteLossGuard(pl.Callback):
    """Stops the run on a NaN/inf loss term.

    Before raising :class:`NonFiniteLossError` it saves the current weights and the offending
    batch next to the run's checkpoints (``nonfinite-step<N>.ckpt`` and ``.batch.pt``).
    """

    def __init__(self) -> None:
        self._batch: Optional[Mapping[str, Tensor]] = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        self._batch = batch  # kept for the dump only

    def check_losses(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     losses: Mapping[str, Tensor]) -> None:
        """The loss-check hook called by ``log_losses``."""
        for name, value in losses.items():
            if not torch.isfinite(value.detach()).all():
                path = self._dump(trainer, pl_module)
                raise NonFiniteLossError(
                    f"loss term '{name}' is {value.detach().flatten()[0].item()} at global step "
                    f"{trainer.global_step} (epoch {trainer.current_epoch}); state saved to {path}")

    def _dump(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Path:
        folder = Path(trainer.default_root_dir)
        if trainer.checkpoint_callback is not None and trainer.checkpoint_callback.dirpath:
            folder = Path(trainer.checkpoint_callback.dirpath)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"nonfinite-step{trainer.global_step}.ckpt"
        torch.save({"state_dict": pl_module.state_dict(), "global_step": trainer.global_step}, path)
        if self._batch is not None:
            torch.save({k: v.cpu() for k, v in self._batch.items()}, path.with_suffix(".batch.pt"))
        return path
