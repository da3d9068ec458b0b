"""``objdecomp gallery <dataset>``: a PNG grid of a dataset's samples and ground truth.

Rows: the images, their instance masks and their semantic maps (colourised with the fixed
palette of :mod:`objdecomp.visualize`, background black), one column per sample. Galleries
go to ``galleries/`` (git-ignored) unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Dict, List, Type

from torch import Tensor
from torch.nn import functional as F

from datamodules.base import SPLITS, ObjectDataModule
from objdecomp.visualize import colorize, save_rows, to_rgb


def datamodule_class(name: str) -> Type[ObjectDataModule]:
    """The datamodule class registered under ``name`` (``dataset_name`` attribute)."""
    from datamodules.registry import get

    return get(name)


def gallery_rows(batch: Dict[str, Tensor], zoom: int = 1) -> Dict[str, Tensor]:
    """Named ``[B, 3, H, W]`` rows: image, then each ground-truth map the batch has,
    enlarged ``zoom`` times (nearest neighbour, so pixels stay crisp)."""
    rows = {"image": to_rgb(batch["image"])}
    for key in ("mask", "semantic"):
        if key in batch:
            rows[key] = colorize(batch[key])
    return {name: F.interpolate(row, scale_factor=zoom, mode="nearest") if zoom > 1 else row
            for name, row in rows.items()}


def main(argv: List[str]) -> None:
    """Write the gallery of one dataset (``objdecomp gallery --help``)."""
    parser = argparse.ArgumentParser(prog="objdecomp gallery", description=__doc__.split("\n")[0])
    parser.add_argument("dataset", help="registered dataset name, e.g. tetrominoes")
    parser.add_argument("--split", default="train", choices=SPLITS)
    parser.add_argument("--n", type=int, default=12, help="number of samples (columns)")
    parser.add_argument("--seed", type=int, default=0, help="the datamodule's seed")
    parser.add_argument("--zoom", type=int, default=2, help="pixel enlargement factor")
    parser.add_argument("--out", type=Path, default=None,
                        help="PNG path (default: galleries/<dataset>[_<split>].png)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # e.g. the digit source
    datamodule = datamodule_class(args.dataset)(seed=args.seed)
    batch = datamodule.sample_batch(args.split, args.n)
    if batch is None:
        raise SystemExit(f"{args.dataset}/{args.split} has no images")
    suffix = "" if args.split == "train" else f"_{args.split}"
    out = args.out or Path("galleries") / f"{args.dataset}{suffix}.png"
    save_rows(gallery_rows(batch, args.zoom), out)
    counts = batch["count"].tolist() if "count" in batch else []
    print(f"wrote {out}: {len(batch['image'])} samples of {args.dataset}/{args.split}"
          + (f", object counts {counts}" if counts else ""))


if __name__ == "__main__":  # pragma: no cover
    import sys

    main(sys.argv[1:])
