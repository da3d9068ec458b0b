"""Time per ReDO training iteration (G/F/δ step + D step) at the paper's configuration.

    python benchmarks/bench_redo_speed.py --threads 2 --iterations 5
    python benchmarks/bench_redo_speed.py --device cuda --precision 32 bf16-mixed --iterations 50

The model is the paper's Flowers configuration, ``experiments/redo_flowers.yaml`` read by
the CLI (128x128, n = 2, z of 32, F nfM = 64, G_k nfX = 32, D and δ nf = 64, self-attention
in G_k and D); the batch is 25 images (§4). Each iteration runs through Lightning exactly as
in training (manual optimisation, objdecomp.training's alternating updates); data loading is not
timed. It also counts the FLOPs of the first warm-up iteration (torch's FlopCounterMode:
convolutions and matmuls) and the time they take at this device's measured fp32 matmul
rate (``floor_s``, for fp32 runs: the step's arithmetic cannot go faster here short of
doing fewer multiplications, e.g. Winograd convolutions). For every mode (``--redraw
one``: Algorithm 1; ``all``: the authors' code, every region redrawn, D fed n·B fakes) and
precision it prints the median time per iteration and of its G and D steps, after
``--warmup`` untimed iterations. The reference on this machine type is the authors' code:
median 37.3 s per iteration on 2 CPU threads (21.9 s G step, 15.4 s D step).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Dict, List

REFERENCE_S = 37.3  # authors' code, 2 threads, batch 25, quiet machine


def time_mode(redraw: str, precision: str, args) -> Dict[str, float]:
    """Median seconds per iteration and per step for one mode and precision."""
    import pytorch_lightning as pl
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from datamodules.textured_shape import TexturedShapeDataModule
    from machine import matmul_gflops, sync
    from objdecomp.cli import ObjdecompCLI, config_arguments

    torch.manual_seed(0)
    data = TexturedShapeDataModule(image_size=128, train_size=25 * (args.iterations + args.warmup),
                                   val_size=1, test_size=1, batch_size=args.batch_size)
    experiment = [*config_arguments("redo_flowers"), f"--model.init_args.redraw={redraw}",
                  "--trainer.logger=false"]
    model = ObjdecompCLI(args=experiment, run=False).model  # as `objdecomp fit` builds it
    steps: List[float] = []
    iterations: List[float] = []
    update = model.updates.update  # one player's update: toggle, backward, step

    def timed_update(*update_args, **kwargs):
        sync(args.device)
        start = time.perf_counter()
        value = update(*update_args, **kwargs)
        sync(args.device)
        steps.append(time.perf_counter() - start)
        return value

    model.updates.update = timed_update

    flops = FlopCounterMode(display=False)

    class IterationTimer(pl.Callback):
        """Times every iteration; counts the FLOPs of the first (a warm-up, untimed)."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                flops.__enter__()
            sync(args.device)
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            sync(args.device)
            iterations.append(time.perf_counter() - self.start)
            if batch_idx == 0:
                flops.__exit__(None, None, None)

    trainer = pl.Trainer(accelerator=args.device, devices=1, precision=precision,
                         max_steps=2 * (args.iterations + args.warmup), logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0,
                         use_distributed_sampler=False, callbacks=[IterationTimer()])
    trainer.fit(model, data)
    skip = args.warmup
    tflop = flops.get_total_flops() / 1e12
    peak = matmul_gflops(args.device)
    return {"tflop_per_iteration": round(tflop, 3), "matmul_gflops": round(peak),
            "floor_s": round(tflop * 1e3 / peak, 1),
            "iteration_s": statistics.median(iterations[skip:]),
            "g_step_s": statistics.median(steps[2 * skip :: 2]),
            "d_step_s": statistics.median(steps[2 * skip + 1 :: 2]),
            "iterations": len(iterations) - skip}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per mode")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed iterations (at least 1: the first is FLOP-counted)")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--redraw", nargs="+", default=["one", "all"])
    parser.add_argument("--precision", nargs="+",
                        help="Lightning precisions, e.g. 32 bf16-mixed (default: 32, and "
                             "bf16-mixed where the hardware has bf16)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (the first iteration is FLOP-counted, untimed)")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from machine import machine_line, native_bf16

    print(machine_line(), flush=True)
    args.precision = args.precision or (["32", "bf16-mixed"] if native_bf16() else ["32"])
    results = []
    for redraw in args.redraw:
        for precision in args.precision:
            row = {"redraw": redraw, "precision": precision, "device": args.device,
                   "threads": args.threads, "batch": args.batch_size,
                   **time_mode(redraw, precision, args)}
            if args.device == "cpu":
                row["speedup_vs_authors_code"] = round(REFERENCE_S / row["iteration_s"], 2)
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
