"""Job lifecycle shared by the tasks: the database row is the truth."""

from __future__ import annotations

import logging
import socket
import time
from datetime import UTC, datetime

from backend.core.db import session_scope
from backend.models import Job, JobStatus

__all__ = ["JobReporter", "claim_job", "finish_job"]

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def claim_job(job_id: int) -> bool:
    """Mark the job running; False when it is already finished or cancelled (safe to re-run)."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            log.warning("job %s does not exist; dropping the task", job_id)
            return False
        if JobStatus(job.status).terminal:
            log.info("job %s is already %s; nothing to do", job_id, job.status)
            return False
        if job.cancel_requested:
            job.status = JobStatus.cancelled.value
            job.finished_at = _now()
            return False
        job.status = JobStatus.running.value
        job.attempts += 1
        job.started_at = job.started_at or _now()
        job.heartbeat_at = _now()
        job.worker = socket.gethostname()
        job.message = "started" if job.attempts == 1 else f"resumed (attempt {job.attempts})"
        return True


def finish_job(job_id: int, status: JobStatus, *, message: str, error: str | None = None) -> None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            return
        job.status = status.value
        job.message = message
        job.error = error
        job.finished_at = _now()
        if status is JobStatus.succeeded:
            job.progress = 1.0


class JobReporter:
    """Writes progress and heartbeats to the job row, at most every ``interval`` seconds."""

    def __init__(self, job_id: int, *, interval: float = 1.0) -> None:
        self.job_id = job_id
        self.interval = interval
        self._last = 0.0
        self._last_check = 0.0
        self._cancelled = False

    def report(self, fraction: float, message: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        with session_scope() as session:
            job = session.get(Job, self.job_id)
            if job is None:
                return
            job.progress = max(0.0, min(1.0, float(fraction)))
            job.message = message
            job.heartbeat_at = _now()
            self._cancelled = job.cancel_requested

    def cancel_requested(self) -> bool:
        """Checked between training steps; re-reads the flag at most every ``interval`` s."""
        if self._cancelled:
            return True
        now = time.monotonic()
        if now - self._last_check < self.interval:
            return False
        self._last_check = now
        with session_scope() as session:
            job = session.get(Job, self.job_id)
            self._cancelled = bool(job and job.cancel_requested)
        return self._cancelled
