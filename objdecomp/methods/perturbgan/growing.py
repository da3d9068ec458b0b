"""Progressive growing as a schedule over real images seen (§4; Karras et al. 2018).

Every resolution trains ``fade_images + stable_images`` real images: the first at full strength
throughout, every later one first fading in over ``fade_images`` (α from 0 to 1), then at full
strength (as the authors' code: 600k + 600k, "1,200,000 real images" per scale in §4); the last
resolution then continues for as long as training runs. α is the authors' ``(n + 1) / fade``
for ``n`` images of the fade seen before the batch. Each resolution has its own batch size
and learning rate, so a phase of ``n`` images lasts ``ceil(n / batch)`` batches, and the phase is
a pure function of the batch counter: a run resumed mid-phase recomputes the same resolution,
batch size, learning rate and α (nothing to checkpoint).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Phase:
    """Where training is after some batches."""

    resolution: int
    alpha: float       # fade-in weight of the newest block (1 when stable)
    batch_size: int
    lr: float
    images: int        # real images seen before this batch
    level: int         # index of ``resolution`` in the schedule


class ProgressiveGrowing:
    """Resolutions, batch sizes and learning rates per resolution, and the images per phase.

    Args:
        resolutions: e.g. ``[8, 16, 32, 64, 128]`` (§4).
        batch_sizes: one per resolution (256, 128, 64, 32, 32 in §4).
        learning_rates: one per resolution (1e-3, but 1.5e-3 at 128 px, §4).
        fade_images: real images of each fade-in (600k in the authors' code).
        stable_images: real images at full strength per resolution (600k; 1.2M per scale in all, §4).
    """

    def __init__(self, resolutions: Sequence[int], batch_sizes: Sequence[int],
                 learning_rates: Sequence[float], fade_images: int, stable_images: int):
        if not (len(resolutions) == len(batch_sizes) == len(learning_rates)) or not resolutions:
            raise ValueError("resolutions, batch_sizes and learning_rates need one entry per "
                             f"resolution, got {len(resolutions)}, {len(batch_sizes)}, {len(learning_rates)}")
        if list(resolutions) != sorted(resolutions):
            raise ValueError(f"resolutions must grow: {list(resolutions)}")
        self.resolutions, self.batch_sizes = list(resolutions), list(batch_sizes)
        self.learning_rates = [float(lr) for lr in learning_rates]
        self.fade_images, self.stable_images = int(fade_images), int(stable_images)
        # (level, alpha start, alpha end, images, batches) of every bounded phase, in order
        self._phases = []
        for level, batch in enumerate(self.batch_sizes):
            last = level == len(self.batch_sizes) - 1
            if level == 0 and not last:
                whole = self.fade_images + self.stable_images
                self._phases.append((level, False, whole, math.ceil(whole / batch)))
                continue
            if level > 0 and self.fade_images > 0:
                self._phases.append((level, True, self.fade_images, math.ceil(self.fade_images / batch)))
            if not last:
                self._phases.append((level, False, self.stable_images,
                                     math.ceil(self.stable_images / batch)))

    @property
    def max_batch_size(self) -> int:
        return max(self.batch_sizes)

    def at(self, batch: int) -> Phase:
        """The phase of training batch number ``batch`` (0-based)."""
        start_batch, images = 0, 0
        for level, fading, phase_images, batches in self._phases:
            if batch < start_batch + batches:
                inside = batch - start_batch
                size = self.batch_sizes[level]
                alpha = min((inside * size + 1) / phase_images, 1.0) if fading else 1.0
                return Phase(self.resolutions[level], alpha, size, self.learning_rates[level],
                             images + inside * size, level)
            start_batch += batches
            images += batches * self.batch_sizes[level]
        level = len(self.resolutions) - 1
        size = self.batch_sizes[level]
        return Phase(self.resolutions[level], 1.0, size, self.learning_rates[level],
                     images + (batch - start_batch) * size, level)

    def batches_until(self, images: int) -> int:
        """The first batch at which at least ``images`` real images have been seen."""
        lo, hi = 0, max(1, images)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.at(mid).images >= images:
                hi = mid
            else:
                lo = mid + 1
        return lo


def fixed(resolution: int, batch_size: int, lr: float) -> ProgressiveGrowing:
    """No growing: ``resolution`` throughout."""
    return ProgressiveGrowing([resolution], [batch_size], [lr], 0, 0)
