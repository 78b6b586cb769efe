"""Jobs: their state and progress."""

from __future__ import annotations

from fastapi import APIRouter

from backend.api.deps import CurrentUser, SessionDep, Writer
from backend.schemas.job import JobPublic, JobsPublic
from backend.services import jobs as svc

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("", operation_id="listJobs")
def list_jobs(user: CurrentUser, session: SessionDep, status: str | None = None) -> JobsPublic:
    """Jobs, newest first."""
    jobs = svc.list_jobs(session, status=status)
    return JobsPublic(data=[JobPublic.model_validate(j) for j in jobs], count=len(jobs))


@router.get("/{job_id}", operation_id="getJob")
def get_job(job_id: int, user: CurrentUser, session: SessionDep) -> JobPublic:
    """One job."""
    return JobPublic.model_validate(svc.get_job(session, job_id))


@router.post("/{job_id}/cancel", operation_id="cancelJob")
def cancel_job(job_id: int, user: Writer, session: SessionDep) -> JobPublic:
    """Ask a job to stop; a running job stops at its next step."""
    job = svc.cancel_job(session, svc.get_job(session, job_id))
    session.commit()
    return JobPublic.model_validate(job)
