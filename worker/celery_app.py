"""The worker's Celery app: acks_late, prefetch 1, explicit queues (gpu, cpu).

Start it with ``attrivue worker`` (or ``celery -A worker.celery_app worker``).
"""

from __future__ import annotations

from backend.core.queue import make_celery

app = make_celery(include=["worker.tasks.train", "worker.tasks.attribute"])
