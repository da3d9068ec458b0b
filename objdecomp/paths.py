"""Where the experiments and the results live (``OBJDECOMP_RESULTS``).

The data root and the missing-dataset error belong to the data layer: datamodules/paths.py.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = REPO_ROOT / "experiments"


def results_root() -> Path:
    """Root of results JSON files, checkpoints and pictures (``$OBJDECOMP_RESULTS``, default ``./results``)."""
    return Path(os.environ.get("OBJDECOMP_RESULTS", "results")).expanduser()


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place, so that a
    reader (or a resumed command) never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text)
    partial.replace(path)

