"""LAVAE's training speed at the paper's config and the cost of its importance-sampled bound.

    python benchmarks/bench_lavae_speed.py [--exp lavae_dsprites] [--threads 1] [--steps 3]
                                           [--batch 64] [--bound-images 16] [--samples 100]

The model is built by the CLI from the experiment file with its datamodule's facts (no data
needed) and trained on random binary batches (``--batch`` images, the paper's 64 × 64): forward,
backward and the Adamax step, at two moments of appendix B's schedule: the warm-up (auxiliary
VAE on, n = 1 forced) and after it (n̂ from f_count on images with 3 objects' worth of peaks,
auxiliary VAE off). Prints the median seconds per step, steps per second, the step's FLOPs
(torch's FlopCounterMode: convolutions, matmuls, FFTs are not counted) and their time at this
device's measured fp32 matmul rate in the same invocation (``floor``), the fraction of that
floor the step reaches, and the seconds per image of the ``--samples``-sample bound (scaled to
a 10k-image test set).
"""

from __future__ import annotations

import argparse
import warnings
import statistics
import time

from machine import machine_line, matmul_gflops


def build(exp: str, **overrides):
    from objdecomp.cli import ObjdecompCLI, config_arguments

    args = [*config_arguments(exp), "--trainer.logger=false"]
    args += [f"--model.init_args.{k}={v}" for k, v in overrides.items()]
    cli = ObjdecompCLI(args=args, run=False)
    return cli.model


def timed_steps(model, images, steps: int):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    optimizer = torch.optim.Adamax(model.parameters(), 1e-3)
    batch = {"image": images}

    def step():
        optimizer.zero_grad()
        model.training_step(batch, 0).backward()
        optimizer.step()

    step()  # warm-up (allocator, kernels)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    with FlopCounterMode(display=False) as flops:
        step()
    return statistics.median(times), flops.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exp", default="lavae_dsprites")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--bound-images", type=int, default=16)
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", ".*self.log.*")
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rate = matmul_gflops()
    print(f"# {machine_line()}; threads {args.threads}; fp32 matmul {rate:.1f} GFLOP/s")
    phases = {"warm-up": dict(aux_weight=1.0, force_one=1.0),
              "after warm-up": dict(aux_weight=0.0, force_one=0.0, count_threshold=-1e9)}
    for phase, overrides in phases.items():
        model = build(args.exp, **overrides)
        if phase == "after warm-up":  # every logit a peak would be 10 objects: cap at 3
            model.hparams.max_count = 3
        size, channels = model.image_size, model.channels
        images = (torch.rand(args.batch, channels, size, size) > 0.9).float()
        seconds, flops = timed_steps(model.train(), images, args.steps)
        floor = flops / (rate * 1e9)
        print(f"{args.exp} {phase}: batch {args.batch} {size}x{size}: {seconds:.2f} s/step "
              f"({1 / seconds:.3f} steps/s), {flops / 1e9:.1f} GFLOP, floor {floor:.2f} s, "
              f"{floor / seconds:.0%} of the matmul floor")
    model = build(args.exp, importance_samples=args.samples, count_threshold=-1e9).eval()
    model.hparams.max_count = 3
    images = (torch.rand(args.bound_images, channels, size, size) > 0.9).float()
    with torch.no_grad():
        start = time.perf_counter()
        model.score_images({"image": images}, None)
        per_image = (time.perf_counter() - start) / args.bound_images
    print(f"{args.exp} bound: {args.samples} samples, 3 objects per image: {per_image:.3f} s/image, "
          f"{per_image * 10000 / 60:.1f} min for 10k test images")


if __name__ == "__main__":
    main()
