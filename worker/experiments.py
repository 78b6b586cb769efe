"""Alias of ``python -m worker.research`` (worker/research/cli.py), kept for docs and scripts.

    python -m worker.experiments EXPERIMENT [options]  ==  python -m worker.research ...

Sections written through the alias record the command as ``python -m worker.experiments``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from worker.research.cli import main as research_main

__all__ = ["PROG", "main"]

PROG = "python -m worker.experiments"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m worker.research``'s ``main`` under the alias' name."""
    return research_main(argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
