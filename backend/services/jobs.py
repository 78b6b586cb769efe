"""Jobs: create the row, commit, then send the task by name with the job id only."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.core.config import Settings
from backend.core.queue import send_job
from backend.models import AttributionMap, Dataset, Job, JobStatus, Run, User
from backend.services.errors import NotFound, Unavailable

__all__ = ["TASK_FOR_KIND", "cancel_job", "dispatch", "get_job", "list_jobs", "new_job"]

log = logging.getLogger(__name__)

TASK_FOR_KIND = {"train": "attrivue.train", "attribute": "attrivue.attribute"}


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
        job.finished_at = datetime.now(UTC)
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
    query = (
        select(Job).where(Job.id.in_(run_jobs.union(map_jobs))).order_by(Job.id.desc()).limit(limit)
    )
    if status:
        query = query.where(Job.status == status)
    return list(session.scalars(query))


def cancel_job(session: Session, job: Job) -> Job:
    """Flag the job; a queued job ends at once, a running one at its next step."""
    if JobStatus(job.status).terminal:
        return job
    job.cancel_requested = True
    if job.status == JobStatus.queued.value:
        job.status = JobStatus.cancelled.value
        job.finished_at = datetime.now(UTC)
        job.message = "cancelled before it started"
    session.flush()
    return job
