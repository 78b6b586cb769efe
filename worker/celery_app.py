"""The worker's Celery app: acks_late, prefetch 1, explicit queues (gpu, cpu).

Start it with ``attrivue worker`` (or ``celery -A worker.celery_app worker``). Every process
that runs tasks registers itself in ``workers`` and beats (``worker.tasks.common.Presence``):
the solo pool's main process, or each prefork child.
"""

from __future__ import annotations

import os
from typing import Any

from celery import signals

from backend.core.queue import make_celery

app = make_celery(
    include=[
        "worker.tasks.train",
        "worker.tasks.attribute",
        "worker.tasks.maps",
        "worker.tasks.evidence",
        "worker.tasks.shortcut",
        "worker.tasks.imports",
    ]
)

_main_pid = os.getpid()


def _queues() -> list[str]:
    return sorted(app.amqp.queues.consume_from)


@signals.worker_init.connect
def _remember_main_process(**_: Any) -> None:
    global _main_pid
    _main_pid = os.getpid()


@signals.worker_process_init.connect
def _register(sender: str | None = None, **_: Any) -> None:
    """Sent in the solo pool's main process, and in every prefork child after the fork."""
    from backend.core.db import get_engine
    from worker.tasks.common import start_presence

    if os.getpid() != _main_pid:
        get_engine().dispose(close=False)  # connections inherited through fork are not ours
    start_presence(nodename=sender or app.conf.get("worker_name") or "celery", queues=_queues())


@signals.worker_ready.connect
def _register_threads_pool(sender: Any = None, **_: Any) -> None:
    """The threads pool sends no worker_process_init: its main process runs the tasks."""
    from worker.tasks.common import start_presence

    pool = getattr(sender, "pool", None)
    if pool is not None and type(pool).__module__.endswith("concurrency.thread"):
        start_presence(nodename=getattr(sender, "hostname", "celery"), queues=_queues())


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _unregister(**_: Any) -> None:
    from worker.tasks.common import stop_presence

    stop_presence()
