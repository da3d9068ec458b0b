"""Generation speed of every procedural dataset: images/s on one CPU core (``make bench-data``).

Each set's training split is read the way training reads it: a shuffled DataLoader in the main
process (``num_workers=0``) whose batches are rendered at once through ``__getitems__`` and
collated. One warm-up batch (digit pools, texture tables) is excluded. The target is >= 2,000
images/s for the 64x64 sets, so that generation never starves training.

Usage: ``python benchmarks/bench_data.py [--images 4096] [--batch-size 64] [--datasets a b]``
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from torch.utils.data import DataLoader, RandomSampler

from datamodules.procedural import ProceduralDataModule
from datamodules.registry import registry

TARGET = 2_000  # images/s on one core for 64x64 sets


def images_per_second(name: str, images: int, batch_size: int) -> float:
    """Images/s of ``name``'s training split through a shuffled single-process DataLoader."""
    datamodule = registry()[name]()
    dataset = datamodule.make_dataset("train")
    sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(0))
    loader = iter(DataLoader(dataset, batch_size=batch_size, sampler=sampler))
    next(loader)  # warm-up
    start, seen = time.perf_counter(), 0
    while seen < images:
        seen += len(next(loader)["image"])
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--datasets", nargs="*", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core, as the target is stated
    procedural = {name: cls for name, cls in registry().items()
                  if issubclass(cls, ProceduralDataModule)}
    names = args.datasets or list(procedural)
    print(f"# bench-data: {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}, 1 thread, batch {args.batch_size}, {args.images} images each")
    print("| dataset | image | images/s | target |")
    print("|---|---|---|---|")
    for name in names:
        cls = procedural[name]
        rate = images_per_second(name, args.images, args.batch_size)
        side = cls().image_size
        verdict = ("ok" if rate >= TARGET else "BELOW") if side == 64 else "-"
        print(f"| {name} | {cls.channels}x{side}x{side} | {rate:,.0f} | {verdict} |", flush=True)


if __name__ == "__main__":
    main()
