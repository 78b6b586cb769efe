"""Training runs."""

from __future__ import annotations

from fastapi import APIRouter

from backend.api.deps import CurrentUser, SessionDep, SettingsDep, authorize
from backend.schemas.job import JobPublic
from backend.schemas.run import MetricPoint, RunCreate, RunMetricsPublic, RunPublic, RunsPublic
from backend.services import jobs as job_svc
from backend.services import projects
from backend.services import runs as svc
from backend.services.datasets import get_dataset
from backend.services.errors import NotFound

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get("", operation_id="listRuns")
def list_runs(
    user: CurrentUser,
    session: SessionDep,
    dataset_id: int | None = None,
    status: str | None = None,
) -> RunsPublic:
    """Runs, newest first, optionally filtered by dataset and status."""
    runs = svc.list_runs(
        session,
        project_ids=projects.member_project_ids(session, user),
        dataset_id=dataset_id,
        status=status,
    )
    return RunsPublic(data=[RunPublic.model_validate(r) for r in runs], count=len(runs))


@router.post("", operation_id="createRun", status_code=201)
def create_run(
    body: RunCreate, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> RunPublic:
    """Create a training run and queue its job."""
    authorize(session, user, get_dataset(session, body.dataset_id), projects.WRITE)
    run = svc.create_run(
        session, dataset_id=body.dataset_id, name=body.name, config=body.config, user=user
    )
    session.commit()
    assert run.job is not None
    job_svc.dispatch(session, run.job, settings)
    return RunPublic.model_validate(run)


@router.get("/{run_id}", operation_id="getRun")
def get_run(run_id: int, user: CurrentUser, session: SessionDep) -> RunPublic:
    """One run."""
    run = svc.get_run(session, run_id)
    authorize(session, user, run)
    return RunPublic.model_validate(run)


@router.get("/{run_id}/metrics", operation_id="getRunMetrics")
def get_run_metrics(run_id: int, user: CurrentUser, session: SessionDep) -> RunMetricsPublic:
    """The run's metrics as a time series (one point per name and epoch or step)."""
    run = svc.get_run(session, run_id)
    authorize(session, user, run)
    points = [MetricPoint.model_validate(m) for m in svc.run_metrics(session, run)]
    return RunMetricsPublic(run_id=run.id, data=points)


@router.post("/{run_id}/cancel", operation_id="cancelRun")
def cancel_run(run_id: int, user: CurrentUser, session: SessionDep) -> JobPublic:
    """Cancel the run's training job."""
    run = svc.get_run(session, run_id)
    authorize(session, user, run, projects.WRITE)
    job = job_svc.get_job(session, run.job_id) if run.job_id else None
    if job is None:
        raise NotFound(f"run {run_id} has no job")
    job_svc.cancel_job(session, job)
    if job.status == "cancelled":
        run.status = "cancelled"
    session.commit()
    return JobPublic.model_validate(job)
