"""Seconds per PerturbGAN stage-one iteration (D step + G step) at 64 and 128 px, ours and the
authors' side by side.

    python benchmarks/bench_perturbgan_speed.py [--resolutions 64 128] [--threads 2] [--rounds 1]
    PERTURBGAN_CODE=/path/to/perturbed-seg python benchmarks/bench_perturbgan_speed.py   # side by side

The model is ``experiments/perturbgan_lsun_car.yaml`` read by the CLI: Table 1 row (a), two
StyleGAN generators (8-layer mappings, style mixing 0.9) and the progressive discriminator, WGAN-GP
with drift, the mask hinge (η = 0.25) and binarisation, the shift δ = 0.125, fp32. Ours trains
through Lightning exactly as ``objdecomp fit`` does (manual optimisation, one D step then one G
step per batch, the EMA), its growing schedule started at the stable phase of the resolution
timed (as a run resumed at that batch: the schedule is a function of the batch counter), with
its learning rate; the networks are the 128-px run's. The batch is §4's 32 at 64 and 128 px
(``--batch-size``). Both sides read the same textured-shape images held in memory, so data
loading costs neither anything: ours gets them at 128 px, a batch at a time (the config's
loader batch of 256, which the step cuts to the phase's 32, would only add collation), and resizes
and crops them in its training step as it does any dataset's; theirs gets them once resized to
the stage's resolution (their PIL resize and crop run in DataLoader workers).

The reference is the authors' code timed in the same invocation, never a number from another
day or host: with ``PERTURBGAN_CODE`` naming a checkout of github.com/adambielski/perturbed-seg,
their ``train.py`` runs in its own process with their README's command for the layered model
less the contrast jitter (row a): ``--max_size 128 --location_jitter 0.125 --min_mask_coverage
0.25 --mask_alpha 2.0 --mixing --org_to_crop 1.125 --sched``, and ``--init_size`` the resolution
timed (their stable start: α = 1 there) and ``--max_batch_size`` the batch. It is patched at
runtime only where this environment differs from theirs (PyTorch 1.2, a GPU, LSUN's lmdb,
MLflow and TensorBoard); :func:`run_authors` lists every patch. An iteration of theirs is timed
from the end of one D optimizer step to the end of the next, so it holds their G step and their
EMA (their G column runs from a D step's end to the G step's end, their D column on to the next D
step's end; ours time each update alone, the EMA outside both); their ``i = 0`` sample grid and checkpoint fall in the untimed warm-up (so would the grid
every 100 iterations, were 100 timed). Each measurement is its own process (memory, and
allocator settings, per run); with ``--rounds`` > 1 ours and theirs alternate, so both see the
machine's load alike. Every row prints the load average around it.

Each row: median seconds per iteration and per D and G step after ``--warmup`` untimed
iterations, CPU seconds per iteration, the FLOPs of the first (warm-up) iteration (torch's
FlopCounterMode: convolutions and matmuls), their time at this device's measured fp32 matmul
rate (``floor``) and that floor as a share of the iteration (how near the arithmetic's limit the
code runs), peak RSS. Per resolution, the ratio of the authors' median to ours (the aim: 1.5).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import types
from pathlib import Path
from typing import List

from machine import machine_line, matmul_gflops
from side_by_side import (IMAGES, AuthorsDone, fit_timed, in_memory_datamodule,
                          measure_in_process, peak_mib, rendered_images, stamp_adam_steps,
                          total_flop_counter)

AUTHORS_CODE_VARIABLE = "PERTURBGAN_CODE"
EXPERIMENT = "perturbgan_lsun_car"
AIM = 1.5  # the authors' time over ours (issue #17)
FIRST_IMAGES = 64  # their train() reads 64 real images for a picture before the first iteration


def stable_start(growing, resolution: int) -> int:
    """The first batch of the schedule's stable (α = 1) phase at ``resolution``."""
    level = growing.resolutions.index(resolution)
    seen = level * (growing.fade_images + growing.stable_images) + (growing.fade_images if level else 0)
    batch = growing.batches_until(seen)  # phases are whole batches: at most a few batches short
    while not (growing.at(batch).resolution == resolution and growing.at(batch).alpha == 1.0):
        batch += 1
    return batch


def run_ours(args) -> dict:
    """Our iterations through Lightning, as `objdecomp fit` runs them, from the stable phase."""
    import torch

    from objdecomp.cli import ObjdecompCLI, config_arguments

    torch.manual_seed(0)
    experiment = [*config_arguments(EXPERIMENT), "--trainer.logger=false"]
    model = ObjdecompCLI(args=experiment, run=False).model  # as `objdecomp fit` builds it
    start, growing = stable_start(model.growing, args.resolution), model.growing
    if args.batch_size > growing.at(start).batch_size:
        raise ValueError(f"--batch-size {args.batch_size}: the schedule's batch at "
                         f"{args.resolution} px is {growing.at(start).batch_size}")
    model.phase = lambda: growing.at(start + model.batch_step)
    images = rendered_images(args.batch_size, count=max(IMAGES * args.batch_size, FIRST_IMAGES))
    timed = fit_timed(model, in_memory_datamodule(images, args.batch_size), args.device,
                      args.iterations + args.warmup)
    steps, skip = timed["step_s"], args.warmup
    return {"iteration_s": timed["iteration_s"][skip:], "d_step_s": steps[2 * skip :: 2],
            "g_step_s": steps[2 * skip + 1 :: 2], "cpu_s": timed["cpu_s"][skip:],
            "tflop": timed["tflop"], "batch": args.batch_size}


class NullLogger:
    """Their TensorBoard and MLflow loggers' methods, doing nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def stub_modules(log_dir: str) -> None:
    """Importable stand-ins for the packages their logging and LSUN reading import."""
    mlflow = types.ModuleType("mlflow")
    mlflow.get_artifact_uri = lambda: f"file://{log_dir}"
    for name in ("log_artifact", "log_param", "log_metric", "log_metrics"):
        setattr(mlflow, name, lambda *args, **kwargs: None)
    tensorboard = types.ModuleType("torch.utils.tensorboard")
    tensorboard.SummaryWriter = NullLogger
    six = types.ModuleType("six")
    six.BytesIO = io.BytesIO
    sys.modules.update({"mlflow": mlflow, "torch.utils.tensorboard": tensorboard, "six": six})


def run_authors(checkout: Path, args) -> dict:
    """The authors' ``train.py`` on the same images, patched at runtime where this environment
    differs from theirs:

    1. ``mlflow``, ``tensorboard`` and ``six`` are not installed: stand-in modules, MLflow's
       artifact folder a temporary one (their run.txt, code copy and ``i = 0`` checkpoint land
       there).
    2. Their ``TensorboardLogger`` and ``MLFlowLogger`` become loggers that drop everything (their
       image grids pass ``range=`` to torchvision's ``make_grid``, which torchvision removed).
    3. No LSUN lmdb: ``utils.LSUNClass`` becomes a placeholder and ``data.sample_data`` a loader
       over the rendered images at the stage's resolution, in [-1, 1], without worker processes.
    4. Their hard-coded ``torch.device("cuda:0")`` becomes ``--device``.
    """
    import torch
    import torch.nn.functional as F

    folder = tempfile.TemporaryDirectory()
    stub_modules(folder.name)
    sys.path.insert(0, str(checkout))
    import data
    import utils

    rendered = rendered_images(args.batch_size, count=max(IMAGES * args.batch_size, FIRST_IMAGES))
    real = F.interpolate(rendered["train"]["image"], size=args.resolution, mode="bilinear",
                         antialias=True, align_corners=False) * 2 - 1
    batches: List[int] = []

    def in_memory_loader(dataset, batch_size, image_size=4, shuffle=True, drop_last=False, **kwargs):
        if image_size != args.resolution:
            raise RuntimeError(f"their code asked for {image_size} px images, {args.resolution} are rendered")
        batches.append(batch_size)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(real, torch.zeros(len(real))),
                                           batch_size=batch_size, shuffle=shuffle, drop_last=drop_last)

    utils.TensorboardLogger = utils.MLFlowLogger = NullLogger
    utils.LSUNClass = lambda *a, **kwargs: None
    data.sample_data = in_memory_loader
    flops = total_flop_counter()
    # after every Adam step: D, then G; stop at the end of the D step after the last timed one
    stamps, cpu = stamp_adam_steps(args.device, flops, flop_steps=2,
                                   last_step=2 * (args.warmup + args.iterations) + 1)
    source = (checkout / "train.py").read_text()
    device_line = 'device = torch.device("cuda:0")'
    if device_line not in source:
        raise RuntimeError(f"{checkout / 'train.py'} no longer sets {device_line!r}; update the patch")
    source = source.replace(device_line, f'device = torch.device("{args.device}")')
    sys.argv = ["train.py", "unused-lmdb", "-d", "lsun", "--max_size", "128",
                "--location_jitter", "0.125", "--min_mask_coverage", "0.25", "--mask_alpha", "2.0",
                "--mixing", "--org_to_crop", "1.125", "--sched", "--init_size", str(args.resolution),
                "--max_batch_size", str(args.batch_size), "--num_workers", "0"]
    flops.__enter__()
    try:
        exec(compile(source, str(checkout / "train.py"), "exec"), {"__name__": "__main__"})
    except AuthorsDone:
        pass
    finally:
        folder.cleanup()
    d_ends, g_ends = stamps[0::2], stamps[1::2]
    timed = range(args.warmup, args.warmup + args.iterations)  # D step k's end to D step k+1's
    return {"iteration_s": [d_ends[k + 1] - d_ends[k] for k in timed],
            "cpu_s": [cpu[2 * k + 2] - cpu[2 * k] for k in timed],
            "g_step_s": [g_ends[k] - d_ends[k] for k in timed],
            "d_step_s": [d_ends[k + 1] - g_ends[k] for k in timed],
            "tflop": flops.get_total_flops() / 1e12, "batch": batches[-1]}


def worker(args) -> None:
    """One measurement (``--worker ours|authors``): its JSON on the last line of stdout."""
    import torch

    torch.set_num_threads(args.threads)
    result = (run_authors(Path(os.environ[AUTHORS_CODE_VARIABLE]), args) if args.worker == "authors"
              else run_ours(args))
    result["peak_mib"] = peak_mib()
    print(json.dumps(result))


def measure(who: str, resolution: int, args) -> dict:
    """Run one measurement in its own process; its result with the load around it."""
    command = [sys.executable, __file__, "--worker", who, "--resolution", str(resolution),
               "--threads", str(args.threads), "--iterations", str(args.iterations),
               "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
               "--device", args.device]
    return measure_in_process(who, command, args.threads, resolution=resolution)


def show(row: dict, peak_gflops: float) -> str:
    median = statistics.median
    floor = row["tflop"] * 1e3 / peak_gflops
    iteration = median(row["iteration_s"])
    return (f"{row['who']:<8}{row['resolution']:>4}{row['batch']:>6}{iteration:>8.2f}"
            f"{median(row['d_step_s']):>8.2f}{median(row['g_step_s']):>8.2f}"
            f"{median(row['cpu_s']):>8.2f}{row['tflop']:>8.3f}{floor:>7.2f}{floor / iteration:>6.0%}"
            f"{row['peak_mib']:>9.0f}  load {row['load']}"
            f"  iterations {', '.join(f'{t:.2f}' for t in row['iteration_s'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128],
                        help="stages timed (any of the schedule's: 8 16 32 64 128)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per run")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed iterations (at least 1: the first is FLOP-counted)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each side, alternating")
    parser.add_argument("--batch-size", type=int, default=32, help="§4: 32 at 64 and 128 px")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--worker", choices=["ours", "authors"], help=argparse.SUPPRESS)
    parser.add_argument("--resolution", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (the first iteration is FLOP-counted, untimed)")
    if args.worker:
        return worker(args)
    checkout = os.environ.get(AUTHORS_CODE_VARIABLE)
    print(machine_line(), flush=True)
    print(f"# authors' code: {checkout}" if checkout else
          f"# authors' code not timed: set {AUTHORS_CODE_VARIABLE} to a checkout of it", flush=True)
    import torch

    torch.set_num_threads(args.threads)
    peak = matmul_gflops(args.device)
    print(f"# {EXPERIMENT}, {args.threads} threads, fp32, {args.warmup} warm-up + "
          f"{args.iterations} timed iterations per run, matmul {peak:.0f} GFLOP/s", flush=True)
    print(f"{'code':<8}{'px':>4}{'batch':>6}{'s/iter':>8}{'D step':>8}{'G step':>8}{'CPU s':>8}"
          f"{'TFLOP':>8}{'floor':>7}{'of it':>6}{'peak MiB':>9}", flush=True)
    rows = []
    for _ in range(args.rounds):
        for resolution in args.resolutions:
            for who in (["authors"] if checkout else []) + ["ours"]:
                rows.append(measure(who, resolution, args))
                print(show(rows[-1], peak), flush=True)
    summarise(rows, args.resolutions)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def summarise(rows: List[dict], resolutions: List[int]) -> None:
    """Per resolution, the authors' median over ours from this run's iterations: wall-clock time
    (the aim) and CPU time (the same comparison less sensitive to other processes' load)."""
    for resolution in resolutions:
        def pooled(who, key):
            return [t for r in rows if (r["who"], r["resolution"]) == (who, resolution) for t in r[key]]

        if not (pooled("authors", "iteration_s") and pooled("ours", "iteration_s")):
            print(f"# {resolution} px ratio: not measured (the authors' code and ours both have to run)")
            continue
        for key, label in (("iteration_s", "wall-clock"), ("cpu_s", "CPU time")):
            theirs, ours = statistics.median(pooled("authors", key)), statistics.median(pooled("ours", key))
            met = "met" if theirs / ours >= AIM else "NOT met"
            verdict = f" (aim {AIM}x: {met})" if key == "iteration_s" else ""
            print(f"# {resolution} px {label} ratio: authors {theirs:.2f} s / ours {ours:.2f} s = "
                  f"{theirs / ours:.2f}x{verdict}")


if __name__ == "__main__":
    main()
