"""The ``objdecomp`` command (console script and ``python -m objdecomp``).

``fit|validate|test|predict`` go to the LightningCLI (objdecomp/cli.py); the suite's own
tools are dispatched before Lightning is imported, so they start fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import List, Optional

TOOLS = {  # subcommand -> module whose main(argv) runs it
    "gallery": "objdecomp.gallery",
    "data": "objdecomp.data",
    "edit": "objdecomp.methods.dti_sprites.editing",
    "tables": "objdecomp.tables",
}


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOLS:
        importlib.import_module(TOOLS[argv[0]]).main(argv[1:])
        return
    if not argv or argv[0] in ("-h", "--help"):
        print(f"tools: objdecomp {{{','.join(TOOLS)}}} --help\n")
    from objdecomp.cli import ObjdecompCLI

    ObjdecompCLI(args=argv)


if __name__ == "__main__":
    main()
