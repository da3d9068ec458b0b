"""Early-collapse detection with automatic restart (ReDO §4: "we automatically restart").

Generic: any LightningModule that exposes the two methods of :class:`Restartable` can use
it. Every ``check_every`` training batches, while at most ``window`` batches have passed
since the current attempt began, the callback scores the model as it is at that batch on one
evaluation batch of the training split and one of the validation split (as ReDO's code
decides at its evaluations; a statistic averaged over the batches since the last check would
hide a collapse late in the interval). When both scores are below ``threshold`` (averaged
over DDP ranks, so all ranks decide alike) it logs a line and has the module re-initialise
its networks and optimizer states from a seed shared by all ranks, at most ``max_restarts``
times. With ``extend_training`` the step budget grows by the steps the collapsed attempt
used, so each attempt gets the full ``max_steps``, as a restart from iteration 0 would.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Protocol, runtime_checkable

import pytorch_lightning as pl
import torch
from torch import Tensor

log = logging.getLogger(__name__)


@runtime_checkable
class Restartable(Protocol):
    """What a module offers the collapse callback."""

    def collapse_statistic(self, images: Tensor) -> Tensor:
        """A scalar for the model as it is now on ``images`` (``[B, C, H, W]`` in [0, 1]),
        lower = more collapsed."""

    def restart(self, seed: int) -> None:
        """Re-initialise networks and optimizer states; the same ``seed`` gives the same weights."""


class CollapseRestart(pl.Callback):
    """Restart a collapsed run from fresh weights (ReDO: empty masks early in training).

    Args:
        threshold: restart when the statistic falls below it on the training and the
            validation batch (ReDO: 0.1, the smallest region's share of the image; the code's
            ``--autoRestart``).
        check_every: training batches between checks (500 in the code).
        window: checks happen only within this many batches of an attempt's start
            (7000 in the code: later collapses are not restarted).
        max_restarts: restarts allowed in one run.
        seed: base seed of the fresh weights (attempt r uses ``seed + r``).
        extend_training: add the collapsed attempt's optimizer steps to ``max_steps``.
        num_images: images of each evaluation batch (default: the datamodule's batch size,
            one batch as in the code), evenly spaced over the split and the same at every check.
    """

    SPLITS = ("train", "val")

    def __init__(self, threshold: float = 0.1, check_every: int = 500, window: int = 7000,
                 max_restarts: int = 3, seed: int = 1000, extend_training: bool = True,
                 num_images: Optional[int] = None):
        self.threshold, self.check_every, self.window = threshold, check_every, window
        self.max_restarts, self.seed, self.extend_training = max_restarts, seed, extend_training
        self.num_images = num_images
        self._evaluation_images: Dict[str, Tensor] = {}
        self.restarts = 0
        self.attempt_start = 0  # batch count at which the current attempt began
        self.attempt_start_step = 0  # optimizer steps at that moment
        self.extra_steps = 0  # optimizer steps added to max_steps so far
        self._base_max_steps: Optional[int] = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not isinstance(pl_module, Restartable):
            raise TypeError(f"{type(pl_module).__name__} does not implement collapse_statistic(images) "
                            "and restart(seed); CollapseRestart cannot watch it")
        if not hasattr(trainer.datamodule, "sample_batch"):
            raise TypeError("CollapseRestart draws its evaluation batches from the datamodule's "
                            "sample_batch(split, n); fit with such a datamodule")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply_extension(trainer)  # after a resume, max_steps comes fresh from the config

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        batches = _batches_seen(trainer)
        since_start = batches - self.attempt_start
        if since_start % self.check_every or since_start > self.window:
            return
        statistics = self.statistics(trainer, pl_module)
        for split, statistic in statistics.items():
            pl_module.log(f"collapse/{split}", statistic, sync_dist=False)
        if not self.collapsed(statistics):
            return
        shown = ", ".join(f"{split} {value:.4f}" for split, value in statistics.items())
        if self.restarts >= self.max_restarts:
            log.warning("collapse detected (%s < %.4f at batch %d) but the %d allowed restarts "
                        "are used up; training goes on", shown, self.threshold, batches,
                        self.max_restarts)
            return
        self.restarts += 1
        log.warning("collapse detected (%s < %.4f at batch %d, %d batches into the attempt): "
                    "restart %d of %d from fresh weights (seed %d)", shown, self.threshold,
                    batches, since_start, self.restarts, self.max_restarts,
                    self.seed + self.restarts)
        pl_module.restart(self.seed + self.restarts)
        if self.extend_training:
            self.extra_steps += trainer.global_step - self.attempt_start_step
            self._apply_extension(trainer)
        self.attempt_start, self.attempt_start_step = batches, trainer.global_step

    def statistics(self, trainer: pl.Trainer, pl_module: Any) -> Dict[str, float]:
        """The module's statistic on each split's evaluation batch, averaged over ranks."""
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                values = {split: pl_module.collapse_statistic(images.to(pl_module.device))
                          for split, images in self._images(trainer).items()}
        finally:
            pl_module.train(was_training)
        return {split: float(trainer.strategy.reduce(value.detach().float(), reduce_op="mean"))
                for split, value in values.items()}

    def collapsed(self, statistics: Dict[str, float]) -> bool:
        """Below the threshold on every split scored (train and val in the code)."""
        return bool(statistics) and all(v < self.threshold for v in statistics.values())

    def _images(self, trainer: pl.Trainer) -> Dict[str, Tensor]:
        """Each split's evaluation batch, drawn once (splits without images are left out)."""
        if not self._evaluation_images:
            datamodule = trainer.datamodule
            count = self.num_images or getattr(datamodule, "batch_size", 25)
            for split in self.SPLITS:
                batch = datamodule.sample_batch(split, count, spread=True)
                if batch is not None:
                    self._evaluation_images[split] = batch["image"]
        return self._evaluation_images

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
