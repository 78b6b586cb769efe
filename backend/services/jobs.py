"""Jobs: create the row, commit, then send the task by name with the job id only.

The row is the truth, and it is what keeps a job alive when its worker dies. Every worker
process keeps a row in ``workers`` fresh (``last_seen_at``) and refreshes the heartbeat of the
job it runs. A ``running`` job whose heartbeat is older than ``job_stale_seconds`` and whose
worker is no longer seen is re-queued by ``recover_lost_jobs``: the status goes back to
``queued`` in one conditional UPDATE (so of several workers checking at once exactly one wins)
and the task is sent again; training then resumes from the run's last checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Hashable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from backend.core import queue
from backend.core.config import Settings
from backend.core.db import session_scope
from backend.core.queue import send_job
from backend.models import (
    AttributionMap,
    Dataset,
    EvidenceCheck,
    Job,
    JobStatus,
    Run,
    User,
    Worker,
)
from backend.services.errors import NotFound, Unavailable

__all__ = [
    "POLL_SECONDS",
    "TERMINAL",
    "Change",
    "REQUEUED_MESSAGE",
    "TASK_FOR_KIND",
    "cancel_job",
    "dispatch",
    "follow",
    "get_job",
    "job_changes",
    "list_jobs",
    "live_workers",
    "new_job",
    "prune_workers",
    "recover_lost_jobs",
    "register_worker",
    "remove_worker",
    "revoke_job",
    "touch_worker",
]

log = logging.getLogger(__name__)

TASK_FOR_KIND = {
    "train": "attrivue.train",
    "attribute": "attrivue.attribute",
    "evidence": "attrivue.evidence",
    "shortcut_report": "attrivue.shortcut_report",
    "cohort_map": "attrivue.cohort_map",
    "check_model": "attrivue.check_model",
}
REQUEUED_MESSAGE = "re-queued after its worker was lost"
POLL_SECONDS = 0.5  # how often a stream re-reads the database
TERMINAL = tuple(s.value for s in JobStatus if s.terminal)
Change = tuple[str, Any]  # (event name, a detached row or a list of rows)
# A worker row unseen this long is deleted: long enough to tell which worker a lost job had.
FORGET_WORKERS_AFTER = timedelta(days=1)


def _now() -> datetime:
    return datetime.now(UTC)


def new_job(session: Session, *, kind: str, user: User | None) -> Job:
    job = Job(kind=kind, created_by_id=user.id if user else None, message="queued")
    session.add(job)
    session.flush()
    return job


def dispatch(session: Session, job: Job, settings: Settings) -> None:
    """Send a committed job to the broker; if the broker refuses, the job is marked failed."""
    try:
        job.celery_task_id = send_job(TASK_FOR_KIND[job.kind], job.id, settings)
    except Exception as exc:  # any broker error: the row must not stay queued forever
        log.exception("could not queue job %s", job.id)
        job.status = JobStatus.failed.value
        job.error = f"the broker refused the job: {type(exc).__name__}"
        job.finished_at = _now()
        _mirror_status(session, job.id, JobStatus.failed.value)
        session.commit()
        raise Unavailable(f"job {job.id} could not be queued: the broker is unreachable") from exc
    session.commit()


def get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def list_jobs(
    session: Session, *, project_ids: list[int], status: str | None = None, limit: int = 100
) -> list[Job]:
    in_projects = select(Dataset.id).where(Dataset.project_id.in_(project_ids))
    run_jobs = select(Run.job_id).where(Run.dataset_id.in_(in_projects))
    map_jobs = (
        select(AttributionMap.job_id)
        .join(Run, Run.id == AttributionMap.run_id)
        .where(Run.dataset_id.in_(in_projects))
    )
    check_jobs = (
        select(EvidenceCheck.job_id)
        .join(Run, Run.id == EvidenceCheck.run_id)
        .where(Run.dataset_id.in_(in_projects))
    )
    query = (
        select(Job)
        .where(Job.id.in_(run_jobs.union(map_jobs, check_jobs)))
        .order_by(Job.id.desc())
        .limit(limit)
    )
    if status:
        query = query.where(Job.status == status)
    return list(session.scalars(query))


def cancel_job(session: Session, job: Job) -> Job:
    """Flag the job; a queued job ends at once, a running one at its network's next forward
    pass (the worker polls the flag from inside training steps and map computations)."""
    if JobStatus(job.status).terminal:
        return job
    job.cancel_requested = True
    if job.status == JobStatus.queued.value:
        job.status = JobStatus.cancelled.value
        job.finished_at = _now()
        job.message = "cancelled before it started"
        _mirror_status(session, job.id, JobStatus.cancelled.value)
    session.flush()
    return job


def revoke_job(job: Job, settings: Settings) -> None:
    """Tell the workers to drop the job's queued message (call after the commit).

    Only an optimisation: a worker that receives the message anyway finds the row cancelled
    and does nothing.
    """
    if not job.celery_task_id:
        return
    try:
        queue.client(settings).control.revoke(job.celery_task_id)
    except Exception:  # the broker being down must not fail a cancel the database recorded
        log.warning("could not revoke task %s of job %s", job.celery_task_id, job.id, exc_info=True)


def _mirror_status(session: Session, job_id: int, status: str) -> None:
    """Give the job's run, attribution map or evidence check the job's status."""
    session.execute(update(Run).where(Run.job_id == job_id).values(status=status))
    session.execute(
        update(AttributionMap).where(AttributionMap.job_id == job_id).values(status=status)
    )
    session.execute(
        update(EvidenceCheck).where(EvidenceCheck.job_id == job_id).values(status=status)
    )


# --------------------------------------------------------------------------- workers


def register_worker(
    session: Session, *, name: str, hostname: str, queues: list[str], gpu: str, pid: int
) -> Worker:
    """Insert or refresh the row of a starting worker process."""
    worker = session.scalar(select(Worker).where(Worker.name == name))
    if worker is None:
        worker = Worker(name=name)
        session.add(worker)
    worker.hostname = hostname
    worker.queues = ",".join(queues)
    worker.gpu = gpu
    worker.pid = pid
    worker.current_job_id = None
    worker.started_at = worker.last_seen_at = _now()
    session.flush()
    return worker


def touch_worker(session: Session, *, name: str, current_job_id: int | None) -> bool:
    """A heartbeat; False when the row is gone (pruned while the process was stopped)."""
    result = session.execute(
        update(Worker)
        .where(Worker.name == name)
        .values(last_seen_at=_now(), current_job_id=current_job_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]  # typed Result; a DML statement returns a CursorResult


def remove_worker(session: Session, *, name: str) -> None:
    session.execute(delete(Worker).where(Worker.name == name))


def live_workers(session: Session, *, settings: Settings) -> list[Worker]:
    """Workers seen within the stale window."""
    cutoff = _now() - timedelta(seconds=settings.job_stale_seconds)
    query = select(Worker).where(Worker.last_seen_at >= cutoff).order_by(Worker.name)
    return list(session.scalars(query))


def prune_workers(session: Session) -> None:
    session.execute(delete(Worker).where(Worker.last_seen_at < _now() - FORGET_WORKERS_AFTER))


def recover_lost_jobs(session: Session, settings: Settings) -> list[int]:
    """Re-queue the running jobs whose worker was lost; returns their ids.

    Lost: the job's heartbeat is older than ``job_stale_seconds`` and its worker has not been
    seen within that window either. Such a job goes back to ``queued`` with its run or map
    (attempts are kept: the next claim counts on) and its task is sent again. A job with a
    cancel request ends ``cancelled`` instead, and one that has had ``job_max_attempts``
    attempts ends ``failed`` (a job that kills its worker must not do so forever).

    Safe to call from every worker at once: each job changes hands in one conditional UPDATE
    and only the winner sends the task. Commits once per job, after the send, so a broker that
    refuses leaves the job running and stale, to be tried again by the next call.
    """
    now = _now()
    cutoff = now - timedelta(seconds=settings.job_stale_seconds)
    alive = select(Worker.name).where(Worker.last_seen_at >= cutoff)
    lost = [
        Job.status == JobStatus.running.value,
        or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff),
        or_(Job.worker.is_(None), Job.worker.not_in(alive)),
    ]
    candidates = session.execute(select(Job.id, Job.kind).where(*lost)).all()
    session.rollback()  # end the read; each job gets its own short write transaction
    requeued = []
    for job_id, kind in candidates:
        if _end_lost_job(session, job_id, lost, settings):
            continue
        won = session.execute(
            update(Job)
            .where(Job.id == job_id, *lost)
            .values(status=JobStatus.queued.value, message=REQUEUED_MESSAGE, worker=None)
        )
        if not won.rowcount:  # type: ignore[attr-defined]  # typed Result; a DML statement returns a CursorResult
            session.rollback()  # another worker re-queued it, or it came back to life
            continue
        _mirror_status(session, job_id, JobStatus.queued.value)
        try:
            task_id = send_job(TASK_FOR_KIND[kind], job_id, settings)
        except Exception:
            session.rollback()
            log.warning("could not re-queue lost job %s; will retry", job_id, exc_info=True)
            continue
        session.execute(update(Job).where(Job.id == job_id).values(celery_task_id=task_id))
        session.commit()
        log.warning("job %s lost its worker; re-queued", job_id)
        requeued.append(job_id)
    return requeued


def _end_lost_job(session: Session, job_id: int, lost: list[Any], settings: Settings) -> bool:
    """End a lost job that must not run again: cancel requested, or attempts used up."""
    gave_up = f"its worker was lost in each of its {settings.job_max_attempts} attempts"
    endings = [
        (Job.cancel_requested.is_(True), JobStatus.cancelled, "cancelled (its worker was lost)"),
        (Job.attempts >= settings.job_max_attempts, JobStatus.failed, "failed: " + gave_up),
    ]
    for condition, status, message in endings:
        ended = session.execute(
            update(Job)
            .where(Job.id == job_id, *lost, condition)
            .values(
                status=status.value,
                finished_at=_now(),
                message=message,
                error=gave_up if status is JobStatus.failed else None,
            )
        )
        if ended.rowcount:  # type: ignore[attr-defined]  # typed Result; a DML statement returns a CursorResult
            _mirror_status(session, job_id, status.value)
            session.commit()
            return True
    return False


# --------------------------------------------------------------------------- streams


async def follow(
    read: Callable[[], tuple[list[Change], bool]], *, poll_seconds: float = POLL_SECONDS
) -> AsyncIterator[list[Change] | None]:
    """Call ``read()`` (blocking, so in a worker thread) every ``poll_seconds``.

    ``read`` returns ``(changes, finished)``. Yields the changes, or ``None`` after a poll
    without any (the caller's chance to send a keep-alive); stops after a finished read.
    """
    while True:
        changes, finished = await anyio.to_thread.run_sync(read)
        yield changes or None
        if finished:
            return
        await asyncio.sleep(poll_seconds)


def _job_key(job: Job) -> Hashable:
    """What a change is made of (the heartbeat alone is not one)."""
    return (job.status, job.progress, job.message, job.error, job.attempts, job.cancel_requested)


def job_changes(
    job_id: int, *, poll_seconds: float = POLL_SECONDS
) -> AsyncIterator[list[Change] | None]:
    """The job now, then each time its status, progress or message changes, until it ends.

    Yields lists of ``("job", Job)`` (a detached row), or ``None`` after a quiet poll.
    """
    last: list[Hashable] = []

    def read() -> tuple[list[Change], bool]:
        with session_scope() as session:
            job = session.get(Job, job_id)
        if job is None:
            return [], True
        key = _job_key(job)
        changes: list[Change] = [] if last and last[0] == key else [("job", job)]
        last[:] = [key]
        return changes, job.status in TERMINAL

    return follow(read, poll_seconds=poll_seconds)
