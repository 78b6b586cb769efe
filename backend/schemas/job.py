from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from backend.schemas.common import ORMModel


class JobPublic(ORMModel):
    id: int
    kind: str
    status: str
    progress: float
    message: str
    error: str | None
    attempts: int
    cancel_requested: bool
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


class WorkerPublic(BaseModel):
    """A live worker process, as /health shows it (no job or patient data)."""

    name: str
    queues: list[str]
    gpu: str
    busy: bool
    started_at: datetime
    last_seen_at: datetime
