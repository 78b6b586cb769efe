"""``python -m worker.research``: the research experiments' command line (``cli.py``)."""

import sys

from worker.research.cli import main

if __name__ == "__main__":
    sys.exit(main())
