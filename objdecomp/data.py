"""``objdecomp data``: download, verify and prepare the real datasets.

    objdecomp data --list
    objdecomp data <name> [--source S] [--root DIR] [--from PATH] [--variant V] [--limit N]
                          [--no-verify] [--no-checksum]

Files go to ``<root>/downloads`` (``root`` defaults to ``$OBJDECOMP_DATA/<name>``, where the
datamodule looks), archives are extracted, and the dataset is arranged or converted into the
layout its datamodule reads (datamodules/*.py document each). ``--from`` skips the download and
uses a local copy of the source (a TFRecord or HDF5 file, or an extracted folder).

This module is the command line only: the catalogue of sources and the preparation steps are
the data layer's (datamodules/catalog.py), the download and checksum machinery too
(datamodules/download.py, which states the checksum policy).
"""

from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Optional

from datamodules.catalog import RECIPES, choose, prepare
from datamodules.registry import registry
from datamodules.download import DownloadError, PrepareOptions


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="objdecomp data", description=__doc__.split("\n\n")[0])
    p.add_argument("name", nargs="?", help="dataset name (see --list)")
    p.add_argument("--list", action="store_true", help="list the datasets and their sources")
    p.add_argument("--source", help="where to get it from (default: the first listed)")
    p.add_argument("--root", help="dataset folder (default: $OBJDECOMP_DATA/<name>)")
    p.add_argument("--from", dest="input", help="use this local copy instead of downloading")
    p.add_argument("--variant", default="colored_on_grayscale", help="Multi-dSprites variant")
    p.add_argument("--limit", type=int, help="source records to convert (multi-object sets)")
    p.add_argument("--no-verify", action="store_true", help="skip TFRecord CRC32C checks (faster)")
    p.add_argument("--no-checksum", action="store_true", help="accept files whose checksum differs")
    return p


def options_from(args: argparse.Namespace) -> PrepareOptions:
    """The data layer's options from the parsed command line."""
    return PrepareOptions(source=args.source, root=args.root, local_copy=args.input, variant=args.variant,
                          limit=args.limit, verify_records=not args.no_verify,
                          strict_checksums=not args.no_checksum)


def listing() -> List[str]:
    """One line per dataset source: name (on its first source), source, note; then the datasets
    generated on the fly, which need no download."""
    lines = []
    for name, sources in RECIPES.items():
        for i, (source, recipe) in enumerate(sources.items()):
            head = f"{name:24s}" if i == 0 else " " * 24
            lines.append(f"{head} {source + (' (default)' if i == 0 else ''):22s} {recipe.note}")
    lines += ["", "Generated here (no download; `make gallery DATASET=<name>` shows samples):"]
    lines += [f"{name:24s} {'generated':22s} {note}" for name, note in generated_datasets().items()]
    return lines


def generated_datasets() -> Dict[str, str]:
    """Datasets that have a datamodule but no download recipe -> what they are."""
    notes = {}
    for name, cls in registry().items():
        if name in RECIPES:
            continue
        module = sys.modules[cls.__module__]
        own = (cls.__doc__ or "").strip()
        note = own.splitlines()[0] if own else f"{cls.__name__}: {(module.__doc__ or '').strip().splitlines()[0]}"
        if hasattr(module, "mnist_source"):  # digits read from MNIST's files when present
            note += " [digits: MNIST under $OBJDECOMP_DATA/MNIST if present, else a stand-in]"
        notes[name] = note
    return notes


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point of ``objdecomp data``."""
    args = parser().parse_args(argv)
    if args.list or not args.name:
        print("\n".join(listing()))
        return
    try:
        choose(args.name, args.source)
    except ValueError as error:  # an unknown dataset or source: the message lists where to look
        raise SystemExit(str(error)) from error
    try:
        prepare(args.name, options_from(args))
    except DownloadError as error:
        raise SystemExit(f"error: {error}") from error
