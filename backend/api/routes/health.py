"""Health: the database and the broker (no login needed; reveals no data)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import BaseModel
from sqlalchemy import text

from backend.api.deps import SessionDep, SettingsDep
from backend.core.queue import make_celery

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str
    broker: str


def _broker_ok(settings) -> str:  # type: ignore[no-untyped-def]
    try:
        with make_celery(settings).connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:  # any transport error means "down" here
        return f"unreachable ({type(exc).__name__})"


@router.get("/health", operation_id="health")
def health(session: SessionDep, settings: SettingsDep, response: Response) -> Health:
    """Whether the database and the broker answer."""
    try:
        session.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:
        database = f"unreachable ({type(exc).__name__})"
    broker = _broker_ok(settings)
    healthy = database == "ok" and broker == "ok"
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(status="ok" if healthy else "degraded", database=database, broker=broker)
