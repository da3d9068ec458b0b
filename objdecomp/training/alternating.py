"""Manual optimisation of a game between networks: a GAN's generator and discriminator (ReDO,
PerturbGAN), or the two sides of a max-min objective (CIS's inpainter and segmenter).

Each network (with its optimizer) is a :class:`Player`; :class:`AlternatingUpdates` updates the
players of one batch in their order, each ``steps`` times in a row, on one batch in ``every``.
One update is the recipe of DESIGN.md ("Training"):

- ``toggled_optimizer`` sets ``requires_grad=False`` on the parameters of the *other*
  optimizers, so the loss only builds gradients for this player's parameters;
- ``manual_backward`` applies precision scaling and DDP's gradient hooks;
- ``clip_gradients`` replaces Lightning's automatic clipping, which manual optimisation lacks;
- ``step``, then ``zero_grad``.

Under ``precision: bf16-mixed`` Lightning runs ``training_step`` inside autocast, so the loss
functions are autocast too. A loss function may differentiate inside itself, e.g. a gradient
penalty through ``torch.autograd.grad(..., create_graph=True)`` on the inputs.

Counting: every update advances ``trainer.global_step`` by one, so a G step and a D step per
batch count two; ``max_steps`` and ``every_n_train_steps`` count optimizer steps, not batches
(:meth:`AlternatingUpdates.optimizer_steps` converts). Batch-indexed schedules read the batch
counter (:func:`objdecomp.schedules.counters`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Sequence

import pytorch_lightning as pl
from torch import Tensor

from objdecomp.schedules import counters

LossFunction = Callable[[], Tensor]


@dataclass(frozen=True)
class Player:
    """One side of the game: the parameters behind one optimizer, and how often they move.

    Args:
        name: key of its loss function in :meth:`AlternatingUpdates.step`, and of its loss
            value in what that returns.
        steps: updates in a row each time it plays (e.g. ReDO's ``discriminator_steps``).
        every: it plays on one batch in ``every`` (those with ``batch % every == 0``); with
            ``steps`` this sets ratios such as 1:3 either way round.
        gradient_clip_val: clip the global norm of its gradients at this value (None: never).
    """

    name: str
    steps: int = 1
    every: int = 1
    gradient_clip_val: Optional[float] = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.every < 1:
            raise ValueError(f"player {self.name!r}: steps and every must be at least 1, "
                             f"got steps={self.steps}, every={self.every}")

    def plays_on(self, batch: int) -> bool:
        return batch % self.every == 0

    def updates(self, batches: int) -> int:
        """Updates it makes in the first ``batches`` batches."""
        return self.steps * math.ceil(batches / self.every)


class AlternatingUpdates:
    """The players' updates of each batch, in order; player ``i`` owns the ``i``-th optimizer
    that the module's ``configure_optimizers`` returns. The module sets
    ``automatic_optimization = False`` and calls :meth:`step` from ``training_step``.
    """

    def __init__(self, players: Sequence[Player]):
        names = [player.name for player in players]
        if len(set(names)) != len(names):
            raise ValueError(f"player names must differ: {names}")
        self.players = list(players)

    def step(self, module: pl.LightningModule, losses: Mapping[str, LossFunction]) -> Dict[str, Tensor]:
        """The updates of the current batch; returns each player's last loss value (detached),
        for the players that played."""
        if module.automatic_optimization:
            raise RuntimeError(f"{type(module).__name__} must set automatic_optimization = False")
        optimizers = module.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        if len(optimizers) != len(self.players):
            raise ValueError(f"{len(self.players)} players but {len(optimizers)} optimizers")
        batch, _ = counters(module)
        values: Dict[str, Tensor] = {}
        for player, optimizer in zip(self.players, optimizers):
            if player.plays_on(batch):
                for _ in range(player.steps):
                    values[player.name] = self.update(module, optimizer, losses[player.name],
                                                      player.gradient_clip_val)
        return values

    @staticmethod
    def update(module: pl.LightningModule, optimizer, loss: LossFunction,
               gradient_clip_val: Optional[float] = None) -> Tensor:
        """One update of the parameters behind ``optimizer`` (the recipe in the module docstring)."""
        with module.toggled_optimizer(optimizer):
            value = loss()
            module.manual_backward(value)
            if gradient_clip_val:
                module.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val,
                                      gradient_clip_algorithm="norm")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return value.detach()

    def optimizer_steps(self, batches: int) -> int:
        """``trainer.global_step`` after ``batches`` batches."""
        return sum(player.updates(batches) for player in self.players)
