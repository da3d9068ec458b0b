"""The base LightningModule every method subclasses.

It owns what all methods share: the dataset facts (linked from the datamodule by the CLI),
the contract check of :meth:`decompose`, the evaluation metrics that the batch's ground
truth supports, loss logging with a non-finite guard, RNG state in checkpoints (exact
resume of stochastic training), warm starts from another stage's checkpoint, and the
manual-optimisation recipe of the adversarial methods (:meth:`optimizer_step_on`).
"""

from __future__ import annotations

import logging
import random
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
import torch
from torch import Tensor, nn

from objdecomp.metrics import build_metrics
from objdecomp.runs import cpu_has_native_bf16
from objdecomp.types import Decomposition, check_batch

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the step and the term."""


class DecompositionModule(pl.LightningModule, ABC):
    """Base of every method.

    Args:
        image_size, channels, max_objects, num_classes, num_background: dataset facts,
            linked from the datamodule by the CLI (never repeated in a model config).
        init_checkpoint: weights of an earlier stage to start from (e.g. CIS's pre-trained
            inpainter, PerturbGAN's generator before its encoder stage); optimizer state and
            counters are not taken from it. Keys that do not match are reported, not ignored
            silently.
    """

    def __init__(self, image_size: int = 64, channels: int = 3, max_objects: int = 1,
                 num_classes: int = 0, num_background: int = 1,
                 init_checkpoint: Optional[str] = None):
        super().__init__()
        self.image_size, self.channels, self.max_objects = image_size, channels, max_objects
        self.num_classes, self.num_background = num_classes, num_background
        self.init_checkpoint = init_checkpoint
        facts = dict(num_classes=num_classes, num_background=num_background,
                     max_objects=max_objects)
        # Separate metric objects per split (lightning-hydra-template): Lightning moves them
        # to the device, and their states never mix across splits.
        self.val_metrics = nn.ModuleDict(build_metrics(**facts))
        self.test_metrics = nn.ModuleDict(build_metrics(**facts))
        self._current_batch: Optional[Mapping[str, Tensor]] = None

    # --- contract 2 ------------------------------------------------------------------------
    @abstractmethod
    def decompose(self, images: Tensor) -> Decomposition:
        """Decompose ``images`` ``[B, C, H, W]`` in [0, 1] into components (DESIGN.md)."""

    def checked_decompose(self, images: Tensor) -> Decomposition:
        return self.decompose(images).check(images)

    def pictures(self) -> Dict[str, Tensor]:
        """Method-specific pictures (name -> ``[3, H, W]`` in [0, 1]), e.g. DTI's learned
        sprites; saved and logged by the visualisation callback beside the decomposition grid."""
        return {}

    # --- evaluation ------------------------------------------------------------------------
    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics)

    def predict_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Decomposition:
        return self.checked_decompose(batch["image"]).detach()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.evaluated_split, self.test_metrics)

    @property
    def evaluated_split(self) -> str:
        """The split ``test`` runs on, which prefixes the test metrics (``test/…``, ``train/…``)."""
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        return getattr(datamodule, "test_split", "test")

    def _evaluate(self, batch: Mapping[str, Tensor], metrics: nn.ModuleDict) -> Decomposition:
        check_batch(batch)
        decomposition = self.checked_decompose(batch["image"]).detach()
        for metric in metrics.values():
            if metric.applies_to(batch, decomposition):
                metric.update(batch, decomposition)
        return decomposition

    def _log_metrics(self, split: str, metrics: nn.ModuleDict) -> None:
        # compute() synchronises the summed states across ranks itself, so every rank logs
        # the same global value and no further reduction is wanted (sync_dist=False).
        values = {}
        for name, metric in metrics.items():
            if metric.update_called:
                for key, value in metric.compute().items():
                    values[f"{split}/{name}_{key}" if key else f"{split}/{name}"] = value
            metric.reset()
        if values:
            self.log_dict(values, sync_dist=False)

    # --- training helpers ------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if (str(self.trainer.precision).startswith("bf16") and self.device.type == "cpu"
                and not cpu_has_native_bf16()):
            rank_zero_warn(f"bf16 on this CPU ({torch.backends.cpu.get_cpu_capability()}, no "
                           "native bf16 instructions) is emulated and several times slower "
                           "than float32: use trainer.precision=32 here")

    def on_train_start(self) -> None:
        if self.trainer.ckpt_path:
            rank_zero_info(f"resumed from {self.trainer.ckpt_path} at global step {self.global_step} "
                           f"(batch step {self.batch_step}, epoch {self.current_epoch})")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._current_batch = batch  # kept for the non-finite-loss dump

    def log_losses(self, losses: Mapping[str, Tensor], prog_bar: bool = True) -> None:
        """Log each loss term as ``train/<name>``; stop the run on a NaN/inf term.

        Before raising, the current weights and the offending batch are saved next to the
        run's checkpoints (``nonfinite-step<N>.ckpt`` and ``.batch.pt``) for debugging.
        """
        for name, value in losses.items():
            if not torch.isfinite(value.detach()).all():
                path = self._dump_nonfinite_state()
                raise NonFiniteLossError(
                    f"loss term '{name}' is {value.detach().flatten()[0].item()} at global step "
                    f"{self.global_step} (epoch {self.current_epoch}); state saved to {path}")
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, prog_bar=prog_bar)

    def _dump_nonfinite_state(self) -> Optional[Path]:
        trainer = self._trainer
        if trainer is None:
            return None
        folder = Path(trainer.default_root_dir)
        if trainer.checkpoint_callback is not None and trainer.checkpoint_callback.dirpath:
            folder = Path(trainer.checkpoint_callback.dirpath)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"nonfinite-step{self.global_step}.ckpt"
        torch.save({"state_dict": self.state_dict(), "global_step": self.global_step}, path)
        if self._current_batch is not None:
            torch.save({k: v.cpu() for k, v in self._current_batch.items()},
                       path.with_suffix(".batch.pt"))
        return path

    def optimizer_step_on(self, optimizer: torch.optim.Optimizer, loss: Callable[[], Tensor],
                          gradient_clip_val: Optional[float] = None) -> Tensor:
        """One manual-optimisation update of the parameters behind ``optimizer``.

        The recipe every adversarial / max-min method uses (DESIGN.md, Training):
        ``toggle_optimizer`` sets ``requires_grad=False`` on the parameters of the *other*
        optimizers, so the loss only builds gradients for this network; ``manual_backward``
        applies precision scaling and DDP hooks; ``clip_gradients`` replaces Lightning's
        automatic clipping (unavailable under manual optimisation); ``step`` then
        ``zero_grad``. Under bf16 (``trainer.precision: bf16-mixed``) Lightning runs
        ``training_step`` inside autocast, so ``loss()`` is autocast too.

        Counting: each call advances ``trainer.global_step`` by one, so a G step plus a D
        step per batch counts two; ``max_steps`` and ``every_n_train_steps`` count
        optimizer steps, not batches. Use ``self.batch_step`` for batch-indexed schedules.
        """
        with self.toggled_optimizer(optimizer):
            value = loss()
            self.manual_backward(value)
            if gradient_clip_val:
                self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val,
                                    gradient_clip_algorithm="norm")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return value.detach()

    @property
    def batch_step(self) -> int:
        """Training batches seen so far (differs from ``global_step`` under manual optimisation)."""
        if self._trainer is None:
            return 0
        return self.trainer.fit_loop.epoch_loop.batch_progress.total.completed

    # --- staged training and exact resume ----------------------------------------------------
    def setup(self, stage: str) -> None:
        resuming = self._trainer is not None and self.trainer.ckpt_path is not None
        if stage == "fit" and self.init_checkpoint and not resuming:
            self.load_weights(self.init_checkpoint)

    def load_weights(self, path: str) -> None:
        """Initialise from the weights of another run; report mismatching keys."""
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        result = self.load_state_dict(state, strict=False)
        log.info("initialised from %s (missing: %d keys, unexpected: %d keys)", path,
                 len(result.missing_keys), len(result.unexpected_keys))

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        # Tensors and plain Python values only, so the checkpoint loads with weights_only=True.
        kind, keys, position, has_gauss, cached = np.random.get_state()
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        states = checkpoint.get("rng_states")
        if states is None:
            return
        torch.set_rng_state(states["torch"])
        kind, keys, position, has_gauss, cached = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
        random.setstate(states["python"])
        if states["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
