"""The base LightningModule every method subclasses: the contract and the evaluation.

It owns the dataset facts (linked from the datamodule by the CLI), the contract check of
:meth:`~DecompositionModule.decompose`, the evaluation (metrics that the batch's ground truth
supports, and the method's own per-image ``evaluation_scores``), the method's ``pictures``,
loss logging, and warm starts from another stage's checkpoint. Everything else a method may
take is a part in :mod:`objdecomp.training` (exact resume, the non-finite guard, the bf16
warning, alternating updates) and :mod:`objdecomp.schedules`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Dict, Mapping, Optional, Tuple

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn

from objdecomp.metrics import ImageMean, build_metrics
from objdecomp.schedules import counters
from objdecomp.types import ContractError, Decomposition, check_batch


class DecompositionModule(pl.LightningModule, ABC):
    """Base of every method.

    A method implements :meth:`decompose` and its training, and may declare:

    - ``evaluation_scores``: names of per-image scores it computes itself in
      :meth:`score_images` (e.g. an ELBO); averaged over the split and logged as
      ``<split>/<name>``;
    - ``parameters_without_gradient_at_first_step``: parameter-name pattern (``fnmatch``) ->
      why it legitimately gets no gradient at the first training step (tests/test_methods.py);
    - ``rank_local_tensors``: tensor attributes that are deliberately neither parameters nor
      buffers (per-rank state that DDP must not broadcast) -> why.

    Args:
        image_size, channels, max_objects, num_classes, num_background: dataset facts,
            linked from the datamodule by the CLI (never repeated in a model config).
        init_checkpoint: weights of an earlier stage to start from (e.g. CIS's pre-trained
            inpainter, PerturbGAN's generator before its encoder stage); optimizer state and
            counters are not taken from it. Keys that do not match are reported, not ignored
            silently.
    """

    evaluation_scores: ClassVar[Tuple[str, ...]] = ()
    parameters_without_gradient_at_first_step: ClassVar[Dict[str, str]] = {}
    rank_local_tensors: ClassVar[Dict[str, str]] = {}

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
        self.val_scores = nn.ModuleDict({name: ImageMean() for name in self.evaluation_scores})
        self.test_scores = nn.ModuleDict({name: ImageMean() for name in self.evaluation_scores})
        # metric name -> why it could not score this method's decompositions of this data
        self.unmet_metric_needs: Dict[str, str] = {}

    # --- contract 2 ------------------------------------------------------------------------
    @abstractmethod
    def decompose(self, images: Tensor) -> Decomposition:
        """Decompose ``images`` ``[B, C, H, W]`` in [0, 1] into components (DESIGN.md)."""

    def checked_decompose(self, images: Tensor) -> Decomposition:
        return self.decompose(images).check(images)

    def pictures(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> Dict[str, Tensor]:
        """Method-specific pictures (name -> ``[3, H, W]`` in [0, 1]) of ``batch`` (on the
        module's device) and its ``decomposition``, e.g. DTI's learned sprites; saved and
        logged by the visualisation callback beside the decomposition grid."""
        return {}

    def score_images(self, batch: Mapping[str, Tensor], decomposition: Decomposition) -> Dict[str, Tensor]:
        """``[B]`` per-image values of each name in ``evaluation_scores``."""
        return {}

    # --- evaluation ------------------------------------------------------------------------
    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, self.val_scores)

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, self.test_scores)

    def predict_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Decomposition:
        return self.checked_decompose(batch["image"]).detach()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", {**self.val_metrics, **self.val_scores})

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.evaluated_split, {**self.test_metrics, **self.test_scores})

    @property
    def evaluated_split(self) -> str:
        """The split ``test`` runs on, which prefixes the test metrics (``test/…``, ``train/…``)."""
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        return getattr(datamodule, "test_split", "test")

    def _evaluate(self, batch: Mapping[str, Tensor], metrics: nn.ModuleDict,
                  scores: nn.ModuleDict) -> Decomposition:
        check_batch(batch)
        decomposition = self.checked_decompose(batch["image"]).detach()
        for name, metric in metrics.items():
            need = metric.unmet_need(batch, decomposition)
            if need is None:
                metric.update(batch, decomposition)
            else:
                self.unmet_metric_needs[name] = need
        if self.evaluation_scores:
            values = self.score_images(batch, decomposition)
            for name, mean in scores.items():
                mean.update(self._checked_score(name, values, len(batch["image"])))
        return decomposition

    @staticmethod
    def _checked_score(name: str, values: Mapping[str, Tensor], batch_size: int) -> Tensor:
        if name not in values or values[name].shape != (batch_size,):
            found = tuple(values[name].shape) if name in values else "nothing"
            raise ContractError(f"score_images must return '{name}' of shape [{batch_size}], "
                                f"got {found}")
        return values[name].detach()

    def _log_metrics(self, split: str, metrics: Mapping[str, nn.Module]) -> None:
        # compute() synchronises the summed states across ranks itself, so every rank logs
        # the same global value and no further reduction is wanted (sync_dist=False).
        values = {}
        for name, metric in metrics.items():
            if metric.update_called:
                computed = metric.compute()
                computed = computed if isinstance(computed, dict) else {"": computed}
                for key, value in computed.items():
                    values[f"{split}/{name}_{key}" if key else f"{split}/{name}"] = value
            metric.reset()
        if values:
            self.log_dict(values, sync_dist=False)

    # --- training --------------------------------------------------------------------------
    def log_losses(self, losses: Mapping[str, Tensor], prog_bar: bool = True) -> None:
        """Log each loss term as ``train/<name>``, after the loss checks of the trainer's
        callbacks (``check_losses``: e.g. :class:`~objdecomp.training.NonFiniteLossGuard`
        stops the run on a NaN/inf term)."""
        if self._trainer is not None:
            for callback in self.trainer.callbacks:
                check = getattr(callback, "check_losses", None)
                if check is not None:
                    check(self.trainer, self, losses)
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, prog_bar=prog_bar)

    @property
    def batch_step(self) -> int:
        """Training batches seen so far (differs from ``global_step`` under manual optimisation)."""
        return counters(self)[0]

    # --- staged training -------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        resuming = self._trainer is not None and self.trainer.ckpt_path is not None
        if stage == "fit" and self.init_checkpoint and not resuming:
            self.load_weights(self.init_checkpoint)

    def load_weights(self, path: str) -> None:
        """Initialise from the weights of another run. No matching key is an error (the wrong
        checkpoint); a partial match is printed with the keys left out."""
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        result = self.load_state_dict(state, strict=False)
        loaded = len(state) - len(result.unexpected_keys)
        if loaded == 0:
            raise ValueError(f"init_checkpoint {path}: none of its {len(state)} weights matches a "
                             f"weight of {type(self).__name__} (a checkpoint of another method or "
                             "stage?)")
        message = f"init_checkpoint {path}: {loaded} of this model's {len(self.state_dict())} weights loaded"
        if result.missing_keys or result.unexpected_keys:
            message += (f"; not in the checkpoint: {_some(result.missing_keys)}; "
                        f"in the checkpoint only: {_some(result.unexpected_keys)}")
        rank_zero_info(message)


def _some(keys, shown: int = 5) -> str:
    """Up to ``shown`` keys and how many more."""
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return (", ".join(keys[:shown]) + more) if keys else "none"
