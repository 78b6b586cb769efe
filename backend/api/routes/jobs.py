"""Jobs: their state and progress."""

from __future__ import annotations

from fastapi import APIRouter

from backend.api.deps import CurrentUser, SessionDep, authorize
from backend.schemas.job import JobPublic, JobsPublic
from backend.services import jobs as svc
from backend.services import projects

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("", operation_id="listJobs")
def list_jobs(user: CurrentUser, session: SessionDep, status: str | None = None) -> JobsPublic:
    """Jobs, newest first."""
    jobs = svc.list_jobs(
        session, project_ids=projects.member_project_ids(session, user), status=status
    )
    return JobsPublic(data=[JobPublic.model_validate(j) for j in jobs], count=len(jobs))


@router.get("/{job_id}", operation_id="getJob")
def get_job(job_id: int, user: CurrentUser, session: SessionDep) -> JobPublic:
    """One job."""
    job = svc.get_job(session, job_id)
    authorize(session, user, job)
    return JobPublic.model_validate(job)


@router.post("/{job_id}/cancel", operation_id="cancelJob")
def cancel_job(job_id: int, user: CurrentUser, session: SessionDep) -> JobPublic:
    """Ask a job to stop; a running job stops at its next step."""
    job = svc.get_job(session, job_id)
    authorize(session, user, job, projects.WRITE)
    job = svc.cancel_job(session, job)
    session.commit()
    return JobPublic.model_validate(job)
