"""Freed CPU memory reused instead of returned to the system, for training on the CPU.

glibc serves every allocation above 32 MiB (a ReDO activation at 128×128 and batch 25 is
100 MiB) with a fresh ``mmap`` and unmaps it on free, so the kernel zero-fills every page of
every such tensor again at its first touch: 1.5 million page faults per ReDO iteration at
batch 10, about a tenth of its CPU time. Served from the heap and never trimmed, the same
pages are reused from the second iteration on (6 faults). PyTorch's CUDA tensors have their
own caching allocator, so only CPU runs need this.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

import pytorch_lightning as pl

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
NEVER_TRIM = 2**31 - 1  # bytes of free heap top kept (mallopt takes an int)


def reuse_freed_memory() -> bool:
    """Serve large allocations from the heap and keep freed heap memory (glibc only).

    Returns whether the allocator took the settings (False on other C libraries)."""
    library = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(library), "mallopt", None) if library else None
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))


class ReuseFreedMemory(pl.Callback):
    """Applies :func:`reuse_freed_memory` when a fit starts on the CPU (the process keeps its
    peak memory until it exits, which a training process does anyway)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cpu" and not reuse_freed_memory():
            log.info("this C library has no mallopt: large CPU tensors are allocated afresh")
