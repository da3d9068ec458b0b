"""Where the datasets live (``$OBJDECOMP_DATA``), and the error a missing one raises."""

from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path:
    """Root of the on-disk datasets (``$OBJDECOMP_DATA``, default ``./data``)."""
    return Path(os.environ.get("OBJDECOMP_DATA", "data")).expanduser()


class DatasetNotFoundError(FileNotFoundError):
    """A real dataset is missing; the message says where it was looked for and how to get it."""

    def __init__(self, name: str, searched: Path, detail: str = ""):
        self.name, self.searched = name, Path(searched)
        why = f" ({detail})" if detail else ""
        super().__init__(
            f"dataset '{name}' not found at {self.searched.resolve()}{why}.\n"
            f"  Get it with:  objdecomp data {name}   (or: make data DATASET={name})\n"
            f"  The data root is $OBJDECOMP_DATA (now: {data_root().resolve()})."
        )
