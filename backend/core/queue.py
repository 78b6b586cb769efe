"""The Celery configuration shared by the backend (which only sends) and the worker.

Two queues. ``gpu``: training and attribution, the work that needs the accelerator; a GPU
worker consumes it alone, one task at a time (``--concurrency 1``). ``cpu``: light work that
must not wait behind a training job or hold a GPU (building a map's display copy and its
statistics); a CPU worker consumes it. ``attrivue serve``'s embedded worker and a one-machine
install consume both. Every task name is routed here (``TASK_QUEUES``); a name not listed is
refused by ``send``, so a new task cannot land on a queue by accident.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from backend.core.config import Settings, get_settings, private_dir

__all__ = ["QUEUES", "TASK_QUEUES", "celery_config", "client", "make_celery", "send", "send_job"]

QUEUES = ("gpu", "cpu")
# Task name -> queue. Training and attribution need the accelerator; the rest is light.
TASK_QUEUES = {
    "attrivue.train": "gpu",
    "attrivue.attribute": "gpu",
    "attrivue.map_products": "cpu",
    "attrivue.evidence": "gpu",
    "attrivue.shortcut_report": "gpu",
    "attrivue.cohort_map": "cpu",
    # An imported model's forward pass on one subject, while its import request waits.
    "attrivue.check_model": "cpu",
}


def celery_config(settings: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "task_default_queue": "gpu",
        "task_routes": {name: {"queue": q} for name, q in TASK_QUEUES.items()},
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }
    if settings.broker_url.startswith("filesystem://"):
        folder = settings.broker_dir
        private_dir(settings.data_dir)
        (folder / "queue").mkdir(parents=True, exist_ok=True)
        (folder / "processed").mkdir(parents=True, exist_ok=True)
        conf["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    elif settings.broker_url.startswith("redis"):
        # A long training job must not be re-delivered while it is still running.
        conf["broker_transport_options"] = {"visibility_timeout": 7 * 24 * 3600}
    return conf


def make_celery(settings: Settings | None = None, *, include: list[str] | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("attrivue", include=include or [])
    app.conf.update(celery_config(settings))
    return app


_clients: dict[tuple[str, str], Celery] = {}


def client(settings: Settings | None = None) -> Celery:
    """The process's Celery client for these settings' broker (made once, then reused)."""
    settings = settings or get_settings()
    key = (settings.broker_url, str(settings.broker_dir))
    if key not in _clients:
        _clients[key] = make_celery(settings)
    return _clients[key]


def send(task_name: str, *args: Any, settings: Settings | None = None) -> str:
    """Send a task by name to its queue (``TASK_QUEUES``); returns the Celery task id."""
    if task_name not in TASK_QUEUES:
        raise KeyError(f"no queue for task {task_name!r}: add it to TASK_QUEUES")
    result = client(settings).send_task(task_name, args=list(args), queue=TASK_QUEUES[task_name])
    return str(result.id)


def send_job(task_name: str, job_id: int, settings: Settings | None = None) -> str:
    """Send a job's task by name, with the job id only (the database row is the truth)."""
    return send(task_name, job_id, settings=settings)
