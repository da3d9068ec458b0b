"""Early-collapse detection with automatic restart (ReDO §4: "we automatically restart").

Generic: any LightningModule that exposes the two methods of :class:`Restartable` can use
it. Every ``check_every`` training batches, while fewer than ``window`` batches have passed
since the current attempt began, the callback asks the module for its collapse statistic
(averaged over DDP ranks, so all ranks decide alike); below ``threshold`` it logs a line and
has the module re-initialise its networks and optimizer states from a seed shared by all
ranks, at most ``max_restarts`` times. With ``extend_training`` the step budget grows by
the steps the collapsed attempt used, so each attempt gets the full ``max_steps``, as a
restart from iteration 0 would.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Protocol, runtime_checkable

import pytorch_lightning as pl
from torch import Tensor

log = logging.getLogger(__name__)


@runtime_checkable
class Restartable(Protocol):
    """What a module offers the collapse callback."""

    def collapse_statistic(self) -> Optional[Tensor]:
        """A scalar, lower = more collapsed, over the batches since the last call (None if none)."""

    def restart(self, seed: int) -> None:
        """Re-initialise networks and optimizer states; the same ``seed`` gives the same weights."""


class CollapseRestart(pl.Callback):
    """Restart a collapsed run from fresh weights (ReDO: empty masks early in training).

    Args:
        threshold: restart when the statistic falls below it (ReDO: 0.1, the smallest
            region's share of the image; the code's ``--autoRestart``).
        check_every: training batches between checks (500 in the code).
        window: checks happen only within this many batches of an attempt's start
            (7000 in the code: later collapses are not restarted).
        max_restarts: restarts allowed in one run.
        seed: base seed of the fresh weights (attempt r uses ``seed + r``).
        extend_training: add the collapsed attempt's optimizer steps to ``max_steps``.
    """

    def __init__(self, threshold: float = 0.1, check_every: int = 500, window: int = 7000,
                 max_restarts: int = 3, seed: int = 1000, extend_training: bool = True):
        self.threshold, self.check_every, self.window = threshold, check_every, window
        self.max_restarts, self.seed, self.extend_training = max_restarts, seed, extend_training
        self.restarts = 0
        self.attempt_start = 0  # batch count at which the current attempt began
        self.attempt_start_step = 0  # optimizer steps at that moment
        self.extra_steps = 0  # optimizer steps added to max_steps so far
        self._base_max_steps: Optional[int] = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and not isinstance(pl_module, Restartable):
            raise TypeError(f"{type(pl_module).__name__} does not implement collapse_statistic() "
                            "and restart(seed); CollapseRestart cannot watch it")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply_extension(trainer)  # after a resume, max_steps comes fresh from the config

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        batches = _batches_seen(trainer)
        since_start = batches - self.attempt_start
        if since_start % self.check_every or since_start > self.window:
            return
        statistic = pl_module.collapse_statistic()
        if statistic is None:
            return
        statistic = float(trainer.strategy.reduce(statistic.detach().float(), reduce_op="mean"))
        pl_module.log("train/collapse_statistic", statistic, sync_dist=False)
        if statistic >= self.threshold:
            return
        if self.restarts >= self.max_restarts:
            log.warning("collapse detected (statistic %.4f < %.4f at batch %d) but the %d "
                        "allowed restarts are used up; training goes on", statistic,
                        self.threshold, batches, self.max_restarts)
            return
        self.restarts += 1
        log.warning("collapse detected (statistic %.4f < %.4f at batch %d, %d batches into "
                    "the attempt): restart %d of %d from fresh weights (seed %d)", statistic,
                    self.threshold, batches, since_start, self.restarts, self.max_restarts,
                    self.seed + self.restarts)
        pl_module.restart(self.seed + self.restarts)
        if self.extend_training:
            self.extra_steps += trainer.global_step - self.attempt_start_step
            self._apply_extension(trainer)
        self.attempt_start, self.attempt_start_step = batches, trainer.global_step

    def _apply_extension(self, trainer: pl.Trainer) -> None:
        loop = trainer.fit_loop.epoch_loop
        if self._base_max_steps is None:
            self._base_max_steps = loop.max_steps  # the configured budget (-1: unbounded)
        if self._base_max_steps > 0:
            loop.max_steps = self._base_max_steps + self.extra_steps

    def state_dict(self) -> Dict[str, int]:
        return {"restarts": self.restarts, "attempt_start": self.attempt_start,
                "attempt_start_step": self.attempt_start_step, "extra_steps": self.extra_steps}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.restarts, self.attempt_start = state["restarts"], state["attempt_start"]
        self.attempt_start_step, self.extra_steps = state["attempt_start_step"], state["extra_steps"]


def _batches_seen(trainer: pl.Trainer) -> int:
    """Training batches started so far, the current one included (survives resumes)."""
    return trainer.fit_loop.epoch_loop.batch_progress.total.ready
