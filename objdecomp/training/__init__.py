"""Parts of training that a method takes or not (DESIGN.md, "Training").

- :class:`ExactResume`: RNG states in checkpoints, restored on resume (callback).
- :class:`NonFiniteLossGuard`: a NaN/inf loss term stops the run and dumps weights and batch
  (callback; :meth:`~objdecomp.methods.base.DecompositionModule.log_losses` feeds it).
- :class:`EmulatedBF16Warning`: warns about bf16 on a CPU that emulates it (callback).
- :class:`AlternatingUpdates` of :class:`Player` s: manual optimisation of adversarial and
  max-min games (helper object).

A method takes the callbacks by returning them from ``configure_callbacks``.
"""

from objdecomp.training.alternating import AlternatingUpdates, Player
from objdecomp.training.nonfinite import NonFiniteLossError, NonFiniteLossGuard
from objdecomp.training.precision import EmulatedBF16Warning
from objdecomp.training.resume import ExactResume

__all__ = ["AlternatingUpdates", "EmulatedBF16Warning", "ExactResume", "NonFiniteLossError",
           "NonFiniteLossGuard", "Player"]
