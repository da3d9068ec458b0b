"""Seconds per DTI-Sprites training step at the paper's Tetrominoes, Multi-dSprites and CLEVR6 configs.

    python benchmarks/bench_dti_speed.py [--threads 2] [--steps 10] [--precision fp32 bf16]
    DTI_SPRITES_CODE=/path/to/dti-sprites python benchmarks/bench_dti_speed.py   # side by side

Each config runs in its own process (so peak RSS is per config): the model is built by the CLI
from ``experiments/dti_sprites_<name>.yaml`` with its datamodule's facts (no data needed), every
transformation module of the curriculum switched on and the sprites unfrozen (the late, most
expensive phase), then trained on random batches of 32 images: forward (encoder, heads, all
candidates rendered, greedy selection, selected layers rendered again, composite), backward and
an Adam step. Prints the median time per step, the part spent in the selection, the encoder's
forward and backward alone on the same batch (the paper prescribes the architecture), its
FLOPs (``enc GF``, counted by torch's FlopCounterMode) and the time they take at this
device's measured fp32 matmul rate (``floor``, for fp32 rows: that arithmetic cannot go
faster here short of doing fewer multiplications, e.g. Winograd convolutions) and peak RSS.
On a GPU it times CUDA steps instead (synchronised). ``bf16`` runs the encoder under bf16
autocast (the rendering, selection and compositing stay in float32, as in training with
``bf16-mixed``).

The reference is the authors' code timed in the same invocation, never a number from another
day or host: with ``DTI_SPRITES_CODE`` naming a checkout of github.com/monniert/dti-sprites,
each config's step is also run, in its own process, by their ``DTISprites`` built from their
``configs/<name>.yml`` (same batch, threads, device; every transformation module on, sprites
unfrozen; their Adam groups), and ``ratio`` is our time over theirs. Their code is patched at
runtime only where this environment differs from theirs (see :func:`import_authors_model`);
it needs ``kornia`` installed. Without the variable the authors' columns say "not timed".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import machine_line, matmul_gflops, native_bf16, sync

TARGET_FRACTION = {"tetrominoes": 0.5, "multi_dsprites": 0.5, "clevr6": 0.25}  # the targets
AUTHORS_CONFIG = {"tetrominoes": "tetro.yml", "multi_dsprites": "dsprites.yml", "clevr6": "clevr6.yml"}
AUTHORS_CODE_VARIABLE = "DTI_SPRITES_CODE"


def build(name: str):
    """The experiment's model with its datamodule's facts, in its late training phase."""
    from objdecomp.cli import ObjdecompCLI, config_arguments

    # Read and instantiated as `objdecomp fit` would (facts linked by the CLI; no data read).
    cli = ObjdecompCLI(args=[*config_arguments(f"dti_sprites_{name}"), "--trainer.logger=false"],
                       run=False)
    model = cli.model
    for sequence in model.net.sequences:
        sequence.set_epoch(10**6)  # all transformation modules on
    model.frozen.fill_(False)
    return model, cli.datamodule.facts


def run_one(name: str, steps: int, precision: str, threads: int) -> dict:
    import resource

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from objdecomp.methods.dti_sprites.selection import greedy_selection

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, facts = build(name)
    model = model.to(device).train()
    optimizer = model.configure_optimizers()["optimizer"]
    images = torch.rand(32, facts["channels"], facts["image_size"], facts["image_size"], device=device)
    selection_time = []
    original = greedy_selection

    def timed_selection(*args, **kwargs):  # the selection's share of the step
        sync(device)
        start = time.perf_counter()
        result = original(*args, **kwargs)
        sync(device)
        selection_time.append(time.perf_counter() - start)
        return result

    import objdecomp.methods.dti_sprites.module as dti_module
    dti_module.greedy_selection = timed_selection
    def autocast():  # as training with bf16-mixed
        return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")

    def train_step():
        with autocast():
            loss = model.training_step({"image": images}, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    encoder_input = (images.contiguous(memory_format=torch.channels_last)
                     if model.hparams.channels_last else images)  # the layout training uses

    def encoder_pass():
        with autocast():
            features = model.net.encoder(encoder_input)
        features.float().square().mean().backward()

    times = seconds(train_step, steps, device)
    encoder_times = seconds(encoder_pass, steps, device)
    with FlopCounterMode(display=False) as encoder_flops:
        encoder_pass()
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"config": name, "device": device, "precision": precision, "threads": threads,
            "s_per_step": statistics.median(times),
            "selection_s": statistics.median(selection_time[2:]) if selection_time else 0.0,
            "encoder_s": statistics.median(encoder_times),
            "encoder_gflop": encoder_flops.get_total_flops() / 1e9,
            "matmul_gflops": matmul_gflops(device),
            "peak_mib": peak, "peak_kind": "GPU allocated" if device == "cuda" else "RSS"}


class RandomImages:
    """What the authors' model reads from its dataset at construction (facts, and 100 images
    for the ``mean`` background initialisation)."""

    def __init__(self, channels: int, size: int):
        self.n_channels, self.img_size = channels, (size, size)

    def __len__(self) -> int:
        return 100

    def __getitem__(self, index: int):
        import torch

        return torch.rand(self.n_channels, *self.img_size), 0


def import_authors_model(checkout: Path):
    """The authors' ``DTISprites`` class, with two runtime patches for this environment: kornia
    0.9 keeps ``homography_warp`` in ``kornia.geometry.transform`` (their code imports it from
    ``kornia``), and SciPy 1.13 moved ``signal.gaussian`` to ``signal.windows``. (A third, on
    the CPU: their sprite masks are made contiguous in :func:`run_authors`.)"""
    import kornia
    import scipy.signal
    from kornia.geometry.transform import homography_warp

    kornia.homography_warp = homography_warp
    if not hasattr(scipy.signal, "gaussian"):
        scipy.signal.gaussian = scipy.signal.windows.gaussian
    sys.path.insert(0, str(checkout / "src"))
    from model.dti_sprites import DTISprites

    return DTISprites


def run_authors(name: str, steps: int, threads: int, checkout: Path) -> dict:
    """Seconds per training step of the authors' code at their config ``name`` (fp32)."""
    import torch
    import yaml
    from torch.optim import Adam

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = yaml.safe_load((checkout / "configs" / AUTHORS_CONFIG[name]).read_text())
    _, facts = build(name)
    model_kwargs = {k: v for k, v in config["model"].items() if k != "name"}
    model = import_authors_model(checkout)(RandomImages(facts["channels"], facts["image_size"]),
                                           **model_kwargs).to(device).train()
    # Their masks start as one Gaussian expanded over K sprites; moving the model to their GPU
    # copied it into K separate masks, which on the CPU has to be done here (Adam writes in place).
    model.mask_params.data = model.mask_params.data.contiguous()
    model.cur_epoch = 10**6  # sprites unfrozen
    transformers = [*model.sprite_transformers, getattr(model, "layer_transformer", None),
                    getattr(model, "bkg_transformer", None)]
    for transformer in filter(None, transformers):
        transformer.activate_all()  # every module of the curriculum on
    training = config["training"]
    optimizer = Adam([dict(params=model.cluster_parameters()),
                      dict(params=model.transformer_parameters(),
                           **training["optimizer"].get("transformer", {}))],
                     lr=training["optimizer"]["lr"])
    model.set_optimizer(optimizer)
    images = torch.rand(32, facts["channels"], facts["image_size"], facts["image_size"], device=device)

    def train_step():  # the body of their Trainer.single_train_batch_run
        optimizer.zero_grad()
        loss, _ = model(images)
        loss.backward()
        optimizer.step()

    return {"config": name, "s_per_step": statistics.median(seconds(train_step, steps, device))}


def seconds(body, steps: int, device: str) -> list:
    """Wall-clock seconds of ``steps`` calls of ``body`` after two warm-up calls."""
    times = []
    for _ in range(steps + 2):
        sync(device)
        start = time.perf_counter()
        body()
        sync(device)
        times.append(time.perf_counter() - start)
    return times[2:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(AUTHORS_CONFIG))
    parser.add_argument("--precision", nargs="+", choices=["fp32", "bf16"],
                        help="default: fp32, and bf16 where the hardware has it (GPU, AVX-512 BF16)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--authors", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    checkout = os.environ.get(AUTHORS_CODE_VARIABLE)
    if args.one:
        result = (run_authors(args.one, args.steps, args.threads, Path(checkout)) if args.authors
                  else run_one(args.one, args.steps, args.precision[0], args.threads))
        print(json.dumps(result))
        return
    print(machine_line(), flush=True)
    print(f"# authors' code: {checkout}" if checkout else
          f"# authors' code not timed: set {AUTHORS_CODE_VARIABLE} to a checkout of it", flush=True)
    args.precision = args.precision or (["fp32", "bf16"] if native_bf16() else ["fp32"])
    print(f"{'config':<16}{'precision':<10}{'s/step':>8}{'select':>8}{'encoder':>9}{'enc GF':>8}"
          f"{'floor':>7}{'peak MiB':>10}{'authors':>9}{'ratio':>7}{'target':>8}")
    for name in args.configs:
        # The authors' code in fp32, timed right before ours, in its own process.
        authors = one_process(name, "fp32", args, authors=True)["s_per_step"] if checkout else None
        for precision in args.precision:
            row = one_process(name, precision, args)
            floor = row["encoder_gflop"] / row["matmul_gflops"]
            theirs, ratio = ((f"{authors:>9.3f}", f"{row['s_per_step'] / authors:>7.2f}") if authors
                             else (f"{'not timed':>9}", f"{'-':>7}"))
            print(f"{name:<16}{precision:<10}{row['s_per_step']:>8.3f}{row['selection_s']:>8.3f}"
                  f"{row['encoder_s']:>9.3f}{row['encoder_gflop']:>8.1f}{floor:>7.3f}"
                  f"{row['peak_mib']:>10.0f}{theirs}{ratio}{TARGET_FRACTION[name]:>8.2f}"
                  f"  ({row['device']}, {row['threads']} threads, peak {row['peak_kind']}, "
                  f"matmul {row['matmul_gflops']:.0f} GFLOP/s)", flush=True)


def one_process(name: str, precision: str, args: argparse.Namespace, authors: bool = False) -> dict:
    """One measurement in its own process (peak memory per config), its JSON result."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    command = [sys.executable, __file__, "--one", name, "--precision", precision,
               "--threads", str(args.threads), "--steps", str(args.steps)]
    out = subprocess.run(command + (["--authors"] if authors else []), env=env,
                         capture_output=True, text=True)
    if out.returncode:
        whose = "the authors' code" if authors else "our code"
        raise RuntimeError(f"{whose} failed on {name}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
