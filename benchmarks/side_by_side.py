"""What the side-by-side speed benchmarks share: ours timed through Lightning, the authors' code
timed from its optimizer steps, each measurement in its own process.

Both sides read the same textured-shape images held in memory, so data loading costs neither
anything; FLOPs are those of the first (warm-up) iteration, counted by torch's FlopCounterMode
(convolutions and matmuls).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from typing import Dict, List, Sequence, Tuple

from machine import sync

IMAGES = 4  # batches of distinct images in memory (both sides cycle through them)


def rendered_images(batch_size: int, image_size: int = 128, count: int = 0) -> Dict[str, dict]:
    """The images both sides train on: textured shapes, ``count`` (default ``IMAGES`` batches)
    per training split, rendered once."""
    from datamodules.textured_shape import TexturedShapeDataModule

    count = count or IMAGES * batch_size
    data = TexturedShapeDataModule(image_size=image_size, train_size=count, val_size=8,
                                   test_size=8, batch_size=batch_size)
    return {split: data.sample_batch(split, count) for split in ("train", "val", "test")}


def in_memory_datamodule(batches: Dict[str, dict], batch_size: int, image_size: int = 128):
    """A datamodule serving the rendered images (built here: datamodules import objdecomp)."""
    from datamodules.base import ObjectDataModule

    class InMemoryImages(ObjectDataModule):
        channels, max_objects, num_background = 3, 1, 1

        def make_dataset(self, split: str):
            batch = batches[split]
            return [{key: value[i] for key, value in batch.items()} for i in range(len(batch["image"]))]

    InMemoryImages.image_size = image_size
    return InMemoryImages(batch_size=batch_size)


def fit_timed(model, datamodule, device: str, batches: int) -> dict:
    """Train ``model`` (manual optimisation, two optimizer steps a batch) for ``batches`` batches
    as `objdecomp fit` does, timing every iteration and every player's update (toggle, loss,
    backward, step), and counting the FLOPs of the first iteration.

    Returns ``iteration_s`` and ``cpu_s`` per batch, ``step_s`` per update in order, ``tflop``.
    """
    import pytorch_lightning as pl

    steps, iterations, cpu = [], [], []
    update = model.updates.update  # one player's update: toggle, backward, step

    def timed_update(*update_args, **kwargs):
        sync(device)
        start = time.perf_counter()
        value = update(*update_args, **kwargs)
        sync(device)
        steps.append(time.perf_counter() - start)
        return value

    model.updates.update = timed_update
    flops = total_flop_counter()

    class IterationTimer(pl.Callback):
        """Times every iteration; counts the FLOPs of the first (a warm-up, untimed)."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                flops.__enter__()
            sync(device)
            self.start, self.cpu = time.perf_counter(), cpu_seconds()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            sync(device)
            iterations.append(time.perf_counter() - self.start)
            cpu.append(cpu_seconds() - self.cpu)
            if batch_idx == 0:
                flops.__exit__(None, None, None)

    trainer = pl.Trainer(accelerator=device, devices=1, precision="32",
                         max_steps=2 * batches, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0,
                         use_distributed_sampler=False, callbacks=[IterationTimer()])
    trainer.fit(model, datamodule)
    return {"iteration_s": iterations, "cpu_s": cpu, "step_s": steps,
            "tflop": flops.get_total_flops() / 1e12}


class _NoModuleTracking:
    """A FlopCounterMode's module tracker that attributes every FLOP to the total only."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def total_flop_counter():
    """A FlopCounterMode (``get_total_flops`` only) that tracks no modules: torch's module
    tracker puts gradient hooks on every module's inputs, which breaks ``torch.autograd.grad``
    with respect to a leaf input (a WGAN-GP gradient penalty's interpolates)."""
    from torch.utils.flop_counter import FlopCounterMode

    flops = FlopCounterMode(display=False)
    flops.mod_tracker = _NoModuleTracking()
    return flops


class AuthorsDone(Exception):
    """Raised from the authors' optimizer step once enough iterations are timed."""


def stamp_adam_steps(device: str, flops, flop_steps: int, last_step: int
                     ) -> Tuple[List[float], List[float]]:
    """Patch ``torch.optim.Adam.step`` to record the wall-clock and process CPU time after every
    step; ``flops`` (an entered FlopCounterMode) is exited after step ``flop_steps`` and
    :class:`AuthorsDone` raised after step ``last_step``. Returns the two lists it fills."""
    import torch

    adam_step = torch.optim.Adam.step
    stamps: List[float] = []
    cpu: List[float] = []

    def timed_step(self, *a, **kwargs):
        result = adam_step(self, *a, **kwargs)
        sync(device)
        stamps.append(time.perf_counter())
        cpu.append(cpu_seconds())
        if len(stamps) == flop_steps:  # the end of the first (warm-up) iteration
            flops.__exit__(None, None, None)
        if len(stamps) == last_step:
            raise AuthorsDone
        return result

    torch.optim.Adam.step = timed_step
    return stamps, cpu


def cpu_seconds() -> float:
    """CPU time of this process's threads so far: what an iteration costs, however many other
    processes share the cores (wall time also counts the waits for them)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_mib() -> float:
    """This process's peak resident memory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_in_process(who: str, command: Sequence[str], threads: int, **labels) -> dict:
    """Run one worker (``command``, whose last stdout line is its JSON result) in its own
    process with ``threads`` OpenMP threads; its result labelled ``who`` and ``labels``, with
    the load average around it."""
    load_before = os.getloadavg()[0]
    out = subprocess.run(list(command), env={**os.environ, "OMP_NUM_THREADS": str(threads)},
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{who} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(who=who, **labels, load=f"{load_before:.1f}->{os.getloadavg()[0]:.1f}")
    return result
