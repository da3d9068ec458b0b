"""A warning for bf16 on a CPU that only emulates it."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from objdecomp.runs import cpu_has_native_bf16


class EmulatedBF16Warning(pl.Callback):
    """Warns at the start of fit when ``trainer.precision`` is bf16 on a CPU without native bf16
    instructions, where bf16 is several times slower than float32 (benchmarks/RESULTS.md)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (str(trainer.precision).startswith("bf16") and pl_module.device.type == "cpu"
                and not cpu_has_native_bf16()):
            rank_zero_warn(f"bf16 on this CPU ({torch.backends.cpu.get_cpu_capability()}, no "
                           "native bf16 instructions) is emulated and several times slower "
                           "than float32: use trainer.precision=32 here")
