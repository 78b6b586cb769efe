"""``python -m attrivue_client``: the same as ``attrivue-client``."""

import sys

from attrivue_client.cli import main

sys.exit(main())
