"""Seconds per ReDO training iteration (G/F/δ step + D step), ours and the authors' side by side.

    python benchmarks/bench_redo_speed.py [--threads 2] [--iterations 2] [--rounds 1]
    REDO_CODE=/path/to/ReDO python benchmarks/bench_redo_speed.py   # side by side

The model is ``experiments/redo_flowers.yaml`` read by the CLI: what the authors' code runs for
Flowers (their README's command: 128×128, n = 2, z of 32, F nfM = 64, G_k nfX = 32, D and δ
nf = 64, self-attention in G_k and D, every region redrawn each iteration so that D judges n·B
fakes, conditional instance norm), batch 25 (§4), fp32. Ours trains through Lightning exactly
as ``objdecomp fit`` does (manual optimisation, alternating updates, D's real batch from its own
stream); ``--redraw one`` also times the paper text's Algorithm 1. Both sides read the same
textured-shape images held in memory, so data loading costs neither anything.

The reference is the authors' code timed in the same invocation, never a number from another
day or host: with ``REDO_CODE`` naming a checkout of github.com/mickaelChen/ReDO, their
``train.py`` runs unchanged in its own process (``--dataset flowers --nfX 32 --useSelfAttG
--useSelfAttD --batchSize 25``) on the same images, patched at runtime only where this
environment differs from theirs (see :func:`run_authors`), and an iteration is timed from one
step of their D's optimizer to the next. Each measurement is its own process (memory, and
allocator settings, per run); with ``--rounds`` > 1 ours and theirs alternate, so both see the
machine's load alike. Every row prints the load average around it.

Each row: median seconds per iteration and per G and D step after ``--warmup`` untimed
iterations, the FLOPs of the first (warm-up) iteration (torch's FlopCounterMode: convolutions
and matmuls), their time at this device's measured fp32 matmul rate (``floor``: the
arithmetic cannot go faster here short of doing fewer multiplications), peak RSS, and for ours
the ratio of the authors' median to ours (the aim: 1.5 at the code's redraw-all).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import List

from machine import machine_line, matmul_gflops
from side_by_side import (AuthorsDone, fit_timed, in_memory_datamodule, measure_in_process,
                          peak_mib, rendered_images, stamp_adam_steps)

AUTHORS_CODE_VARIABLE = "REDO_CODE"
AIM = 1.5  # the authors' time over ours at redraw-all (issue #14)


def run_ours(redraw: str, args) -> dict:
    """Our iterations through Lightning, as `objdecomp fit` runs them."""
    import torch

    from objdecomp.cli import ObjdecompCLI, config_arguments

    torch.manual_seed(0)
    experiment = [*config_arguments("redo_flowers"), f"--model.init_args.redraw={redraw}",
                  "--trainer.logger=false"]
    model = ObjdecompCLI(args=experiment, run=False).model  # as `objdecomp fit` builds it
    timed = fit_timed(model, in_memory_datamodule(rendered_images(args.batch_size), args.batch_size),
                      args.device, args.iterations + args.warmup)
    steps, skip = timed["step_s"], args.warmup
    return {"iteration_s": timed["iteration_s"][skip:], "g_step_s": steps[2 * skip :: 2],
            "d_step_s": steps[2 * skip + 1 :: 2], "cpu_s": timed["cpu_s"][skip:],
            "tflop": timed["tflop"]}


def run_authors(checkout: Path, args) -> dict:
    """The authors' ``train.py`` on the same images, with three runtime patches: the images come
    from memory (their Flowers dataset class is replaced), their hard-coded ``cuda:0`` becomes
    ``--device``, and ``Adam(betas=(0, 0.9))`` gets floats (torch 2 rejects an int beta)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    sys.path.insert(0, str(checkout))
    import datasets

    data = rendered_images(args.batch_size)

    class Rendered(torch.utils.data.Dataset):  # their dataset's items: (image in [-1, 1], mask)
        def __init__(self, root, split="train", transform=None):
            self.batch = data[split]

        def __len__(self):
            return len(self.batch["image"])

        def __getitem__(self, index):
            return self.batch["image"][index] * 2 - 1, self.batch["mask"][index][None].float()

    datasets.FlowersDataset = Rendered
    adam_init = torch.optim.Adam.__init__

    def float_betas(self, params, *a, betas=(0.9, 0.999), **kwargs):
        adam_init(self, params, *a, betas=tuple(float(b) for b in betas), **kwargs)

    flops = FlopCounterMode(display=False)
    # after every Adam step: F, G, δ (G step), then D (D step); process CPU seconds likewise
    stamps, cpu = stamp_adam_steps(args.device, flops, flop_steps=4,
                                   last_step=4 * (args.warmup + args.iterations))
    torch.optim.Adam.__init__ = float_betas
    source = (checkout / "train.py").read_text()
    device_line = 'opt.device = "cuda:0"'
    if device_line not in source:
        raise RuntimeError(f"{checkout / 'train.py'} no longer sets {device_line!r}; update the patch")
    source = source.replace(device_line, f'opt.device = "{args.device}"')
    with tempfile.TemporaryDirectory() as folder:
        sys.argv = ["train.py", "--dataset", "flowers", "--nfX", "32", "--useSelfAttG",
                    "--useSelfAttD", "--batchSize", str(args.batch_size), "--silent",
                    "--outf", folder, "--dataroot", folder]
        flops.__enter__()
        try:
            exec(compile(source, str(checkout / "train.py"), "exec"), {"__name__": "__main__"})
        except AuthorsDone:
            pass
    ends, cpu_ends = stamps[3::4], cpu[3::4]  # D steps end the iterations
    first = args.warmup - 1
    return {"iteration_s": [b - a for a, b in zip(ends[first:], ends[first + 1:])],
            "cpu_s": [b - a for a, b in zip(cpu_ends[first:], cpu_ends[first + 1:])],
            "g_step_s": [stamps[4 * i + 2] - stamps[4 * i - 1] for i in range(args.warmup, len(ends))],
            "d_step_s": [stamps[4 * i + 3] - stamps[4 * i + 2] for i in range(args.warmup, len(ends))],
            "tflop": flops.get_total_flops() / 1e12}


def worker(args) -> None:
    """One measurement (``--worker ours|authors``): its JSON on the last line of stdout."""
    import torch

    torch.set_num_threads(args.threads)
    result = (run_authors(Path(os.environ[AUTHORS_CODE_VARIABLE]), args) if args.worker == "authors"
              else run_ours(args.redraw[0], args))
    result["peak_mib"] = peak_mib()
    print(json.dumps(result))


def measure(who: str, redraw: str, args) -> dict:
    """Run one measurement in its own process; its result with the load around it."""
    command = [sys.executable, __file__, "--worker", who, "--redraw", redraw,
               "--threads", str(args.threads), "--iterations", str(args.iterations),
               "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
               "--device", args.device]
    return measure_in_process(who, command, args.threads,
                              redraw=redraw if who == "ours" else "all")


def show(row: dict, peak_gflops: float) -> str:
    median = statistics.median
    floor = row["tflop"] * 1e3 / peak_gflops
    return (f"{row['who']:<8}{row['redraw']:<7}{median(row['iteration_s']):>8.1f}"
            f"{median(row['g_step_s']):>8.1f}{median(row['d_step_s']):>8.1f}"
            f"{median(row['cpu_s']):>8.1f}{row['tflop']:>8.3f}{floor:>7.1f}"
            f"{row['peak_mib']:>9.0f}  load {row['load']}"
            f"  iterations {', '.join(f'{t:.1f}' for t in row['iteration_s'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations per run")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed iterations (at least 1: the first is FLOP-counted)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each side, alternating")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--redraw", nargs="+", default=["all"], choices=["all", "one"],
                        help="our modes (the authors' code redraws all)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--worker", choices=["ours", "authors"], help=argparse.SUPPRESS)
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
    print(f"# {args.threads} threads, batch {args.batch_size}, fp32, {args.warmup} warm-up + "
          f"{args.iterations} timed iterations per run, matmul {peak:.0f} GFLOP/s", flush=True)
    print(f"{'code':<8}{'redraw':<7}{'s/iter':>8}{'G step':>8}{'D step':>8}{'CPU s':>8}"
          f"{'TFLOP':>8}{'floor':>7}{'peak MiB':>9}", flush=True)
    rows = []
    for _ in range(args.rounds):
        runs = ([("authors", "all")] if checkout else []) + [("ours", r) for r in args.redraw]
        for who, redraw in runs:
            rows.append(measure(who, redraw, args))
            print(show(rows[-1], peak), flush=True)
    summarise(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def summarise(rows: List[dict]) -> None:
    """The authors' median over ours at redraw-all, from this run's iterations: wall-clock time
    (the aim) and CPU time (the same comparison less sensitive to other processes' load)."""
    def pooled(who, key):
        return [t for r in rows if (r["who"], r["redraw"]) == (who, "all") for t in r[key]]

    if not (pooled("authors", "iteration_s") and pooled("ours", "iteration_s")):
        print("# ratio: not measured (the authors' code and our redraw-all both have to run)")
        return
    for key, label in (("iteration_s", "wall-clock"), ("cpu_s", "CPU time")):
        theirs, ours = statistics.median(pooled("authors", key)), statistics.median(pooled("ours", key))
        met = "met" if theirs / ours >= AIM else "NOT met"
        verdict = f" (aim {AIM}x: {met})" if key == "iteration_s" else ""
        print(f"# {label} ratio at redraw-all: authors {theirs:.1f} s / ours {ours:.1f} s = "
              f"{theirs / ours:.2f}x{verdict}")


if __name__ == "__main__":
    main()
