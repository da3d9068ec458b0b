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
    "compare": "objdecomp.compare",
    "report": "objdecomp.report",
    "segment": "objdecomp.segment",
    "tables": "objdecomp.tables",
}


def main(argv: Optional[List[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in TOOLS:
        status = importlib.import_module(TOOLS[args[0]]).main(args[1:])
        if status:  # a tool's non-zero status is the command's
            sys.exit(status)
        return
    if not args or args[0] in ("-h", "--help"):
        print(f"tools: objdecomp {{{','.join(TOOLS)}}} --help\n")
    from objdecomp.cli import ObjdecompCLI

    ObjdecompCLI(args=argv)  # None: it reads sys.argv itself (given both, Lightning warns)


if __name__ == "__main__":
    main()
