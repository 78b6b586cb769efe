"""A worker container's healthcheck: ``python -m worker.healthcheck <node name>``.

Exit 0 when a process of that Celery node (``gpu0@<host>``, ``cpu@<host>``: the
``--name`` of ``attrivue worker``, with ``%h`` expanded) has beaten within
``ATTRIVUE_JOB_STALE_SECONDS``, else 1. It reads the ``workers`` table, not the broker: a
solo-pool GPU worker busy with a training job cannot answer ``celery inspect ping``, while its
heartbeat thread keeps beating (``worker.tasks.common.Presence``).
"""

from __future__ import annotations

import socket
import sys
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from backend.core.config import get_settings
from backend.core.db import session_scope
from backend.models import Worker


def alive(node: str) -> list[str]:
    """Names of the processes of ``node`` seen within the stale window."""
    cutoff = datetime.now(UTC) - timedelta(seconds=get_settings().job_stale_seconds)
    with session_scope() as session:
        names = session.scalars(
            select(Worker.name).where(Worker.name.like(f"{node}:%"), Worker.last_seen_at >= cutoff)
        )
        return [n for n in names if n.rpartition(":")[0] == node]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m worker.healthcheck <node name, e.g. gpu0@%h>", file=sys.stderr)
        return 2
    node = args[0].replace("%h", socket.gethostname())
    found = alive(node)
    print(f"{node}: {'alive (' + ', '.join(found) + ')' if found else 'no recent heartbeat'}")
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
