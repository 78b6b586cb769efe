"""Health: the database, the broker and the live workers (no login needed; reveals no data)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.orm import Session

from backend.api.deps import Public, SessionDep, SettingsDep
from backend.core.config import Settings
from backend.core.queue import client
from backend.schemas.job import WorkerPublic
from backend.services.jobs import live_workers

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str
    broker: str
    workers: list[WorkerPublic]  # seen within ATTRIVUE_JOB_STALE_SECONDS


def _broker_ok(settings: Settings) -> str:
    try:
        with client(settings).connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:  # any transport error means "down" here
        return f"unreachable ({type(exc).__name__})"


def _workers(session: Session, settings: Settings) -> list[WorkerPublic]:
    return [
        WorkerPublic(
            name=w.name,
            queues=[q for q in w.queues.split(",") if q],
            gpu=w.gpu,
            busy=w.current_job_id is not None,
            started_at=w.started_at,
            last_seen_at=w.last_seen_at,
        )
        for w in live_workers(session, settings=settings)
    ]


@router.get("/health", operation_id="health", dependencies=[Public])
def health(session: SessionDep, settings: SettingsDep, response: Response) -> Health:
    """Whether the database and the broker answer, and which workers are alive.

    No worker is no failure (`serve --no-worker` has none): jobs wait queued until one starts.
    """
    workers: list[WorkerPublic] = []
    try:
        session.execute(text("SELECT 1"))
        database = "ok"
        workers = _workers(session, settings)
    except Exception as exc:
        database = f"unreachable ({type(exc).__name__})"
    broker = _broker_ok(settings)
    healthy = database == "ok" and broker == "ok"
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(
        status="ok" if healthy else "degraded", database=database, broker=broker, workers=workers
    )
