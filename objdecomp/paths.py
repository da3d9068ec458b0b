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
