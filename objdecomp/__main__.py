"""``python -m objdecomp`` is the ``objdecomp`` command."""

from objdecomp.cli import main

if __name__ == "__main__":
    main()
