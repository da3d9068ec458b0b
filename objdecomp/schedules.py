"""Schedules: values that follow the training counters (annealing, warm-ups, curricula, freezes,
stages, learning-rate drops), as objects configured in YAML and logged under ``schedule/<name>``.

A schedule is a pure function of the counters, so it holds no state to checkpoint: a resumed run
recomputes the same values. Each reads one counter, chosen by ``unit``:

- ``"step"``: training batches completed (:func:`counters`); under manual optimisation this is
  not ``global_step``, which counts optimizer steps (two per batch for a G + D method);
- ``"epoch"``: ``current_epoch``.

A method takes a schedule as an ``__init__`` argument typed ``Union[float, Schedule]``, so a YAML
file may give a plain number or a schedule object::

    beta: 4.0
    beta:
      class_path: objdecomp.schedules.Linear
      init_args: {start: 0.0, end: 1.0, duration: 100000}

and reads it with :func:`value` (or :func:`current` inside a LightningModule).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from bisect import bisect_right
from typing import Callable, Dict, List, Literal, Mapping, Tuple, Union

import pytorch_lightning as pl

Unit = Literal["step", "epoch"]


class Schedule(ABC):
    """A value as a function of the training counters; ``unit`` says which counter it reads."""

    def __init__(self, unit: Unit = "step"):
        if unit not in ("step", "epoch"):
            raise ValueError(f"unit must be 'step' or 'epoch', not {unit!r}")
        self.unit = unit

    def __call__(self, step: int, epoch: int) -> float:
        return float(self.at(step if self.unit == "step" else epoch))

    @abstractmethod
    def at(self, t: int) -> float:
        """The value when the counter this schedule reads is ``t``."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Constant(Schedule):
    """The same value throughout."""

    def __init__(self, value: float, unit: Unit = "step"):
        super().__init__(unit)
        self.value = value

    def at(self, t: int) -> float:
        return self.value


class _Annealing(Schedule):
    """From ``start`` (up to ``begin``) to ``end`` (from ``begin + duration`` on)."""

    def __init__(self, start: float, end: float, duration: int, begin: int = 0, unit: Unit = "step"):
        super().__init__(unit)
        if duration < 0:
            raise ValueError(f"duration must be >= 0, not {duration}")
        self.start, self.end, self.duration, self.begin = start, end, duration, begin

    def at(self, t: int) -> float:
        if self.duration == 0:
            return self.end if t >= self.begin else self.start
        progress = min(max((t - self.begin) / self.duration, 0.0), 1.0)
        return self.interpolate(progress)

    @abstractmethod
    def interpolate(self, progress: float) -> float:
        """The value at ``progress`` in [0, 1] of the annealing."""


class Linear(_Annealing):
    """Linear annealing, e.g. a warm-up (0 -> 1) or the β-VAE's β (0 -> 1 over 100k steps)."""

    def interpolate(self, progress: float) -> float:
        return self.start + (self.end - self.start) * progress


class Exponential(_Annealing):
    """Geometric interpolation (constant ratio per count); ``start`` and ``end`` must share a sign."""

    def __init__(self, start: float, end: float, duration: int, begin: int = 0, unit: Unit = "step"):
        if start * end <= 0:
            raise ValueError(f"Exponential needs start and end of one sign, not {start} and {end}")
        super().__init__(start, end, duration, begin, unit)

    def interpolate(self, progress: float) -> float:
        return self.start * (self.end / self.start) ** progress


class Cosine(_Annealing):
    """Half-cosine annealing (flat at both ends)."""

    def interpolate(self, progress: float) -> float:
        return self.end + (self.start - self.end) * (1 + math.cos(math.pi * progress)) / 2


class Piecewise(Schedule):
    """Constant pieces: ``values[k]`` from count ``k`` until the next listed count.

    Freezes (``{0: 1, 10: 0}``: frozen for the first 10) and stage switches
    (``{0: 0, 5000: 1, 20000: 2}``) are piecewise schedules. Count 0 must be listed, so the value
    before the first switch is never implicit.
    """

    def __init__(self, values: Dict[int, float], unit: Unit = "step"):
        super().__init__(unit)
        if 0 not in values:
            raise ValueError(f"Piecewise needs the value from count 0 on; got counts {sorted(values)}")
        self.values = {int(k): float(v) for k, v in sorted(values.items())}

    def at(self, t: int) -> float:
        counts = list(self.values)
        return self.values[counts[max(bisect_right(counts, t) - 1, 0)]]


class Curriculum(Schedule):
    """How many items of a sequence are switched on: item ``i`` from count ``starts[i]`` on.

    ``minimum`` items are on from the start whatever their counts. (DTI-Sprites' transformation
    modules use none: a sequence whose first module has an epoch starts with no module on, see
    :class:`~objdecomp.nn.transforms.TransformSequence`.)
    """

    def __init__(self, starts: List[int], minimum: int = 0, unit: Unit = "step"):
        super().__init__(unit)
        if list(starts) != sorted(starts):
            raise ValueError(f"curriculum counts must not decrease along the sequence: {starts}")
        self.starts, self.minimum = list(starts), minimum

    def at(self, t: int) -> float:
        return float(max(bisect_right(self.starts, t), self.minimum))


class StepDecay(Schedule):
    """Factor ``gamma ** (milestones reached)``, e.g. learning rates ×0.1 at given epochs."""

    def __init__(self, milestones: List[int], gamma: float = 0.1, unit: Unit = "step"):
        super().__init__(unit)
        self.milestones, self.gamma = sorted(milestones), gamma

    def at(self, t: int) -> float:
        return self.gamma ** bisect_right(self.milestones, t)


ScheduleOrNumber = Union[float, Schedule]


def value(schedule: ScheduleOrNumber, step: int, epoch: int) -> float:
    """Evaluate a schedule, or return a plain number as it is."""
    return schedule(step, epoch) if isinstance(schedule, Schedule) else float(schedule)


def counters(module: pl.LightningModule) -> Tuple[int, int]:
    """``(step, epoch)`` of ``module``'s training: batches completed and the current epoch
    (``(0, 0)`` outside a trainer)."""
    if module._trainer is None:
        return 0, 0
    return module.trainer.fit_loop.epoch_loop.batch_progress.total.completed, module.current_epoch


def current(module: pl.LightningModule, schedule: ScheduleOrNumber) -> float:
    """The value of ``schedule`` at ``module``'s training counters."""
    return value(schedule, *counters(module))


def log_schedules(module: pl.LightningModule, schedules: Mapping[str, ScheduleOrNumber]
                  ) -> Dict[str, float]:
    """Log each schedule's current value as ``schedule/<name>`` and return the values.

    Call it where the values may change (each batch for step-indexed schedules, each epoch
    start for epoch-indexed ones); plain numbers (e.g. a learning rate read from an optimizer)
    are logged as they are.
    """
    values = {name: current(module, schedule) for name, schedule in schedules.items()}
    module.log_dict({f"schedule/{name}": v for name, v in values.items()})
    return values


def as_lr_lambda(schedule: Schedule) -> Callable[[int], float]:
    """A ``LambdaLR`` factor from a schedule of the scheduler's own interval (``unit="epoch"``
    with ``interval: epoch``). A plain function, so the scheduler's checkpointed state holds no
    object: the schedule comes from the config on resume."""
    return lambda count: schedule(count, count)
