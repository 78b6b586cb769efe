"""The Celery configuration shared by the backend (which only sends) and the worker."""

from __future__ import annotations

from typing import Any

from celery import Celery

from backend.core.config import Settings, get_settings

__all__ = ["celery_config", "client", "make_celery", "send_job", "TASK_QUEUES"]

# Task name -> queue. Training and attribution need the accelerator.
TASK_QUEUES = {
    "attrivue.train": "gpu",
    "attrivue.attribute": "gpu",
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


def send_job(task_name: str, job_id: int, settings: Settings | None = None) -> str:
    """Send a task by name, with the job id only (the database row is the truth)."""
    result = client(settings).send_task(
        task_name, args=[job_id], queue=TASK_QUEUES.get(task_name, "gpu")
    )
    return str(result.id)
