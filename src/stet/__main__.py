"""``python -m stet``: the ``stet`` command (see :mod:`stet._cli`)."""

from __future__ import annotations

import sys

from ._cli import main as _main

__all__ = ["main"]


def main() -> int:
    """Entry point of the ``stet`` console script and of ``python -m stet``."""
    return _main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
