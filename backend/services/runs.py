"""Training runs: validate the config, store the run and its job, queue it."""

from __future__ import annotations

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.models import Dataset, Run, RunMetric, User
from backend.services.datasets import get_dataset
from backend.services.errors import InvalidInput, NotFound
from backend.services.jobs import new_job
from worker.ml.configs import RunConfig

__all__ = ["create_run", "get_run", "list_runs", "run_metrics", "validate_config"]


def validate_config(raw: dict) -> dict:
    """The run config, validated by the science engine's own schema, with defaults filled in."""
    try:
        return RunConfig.model_validate(raw).model_dump(mode="json")
    except ValidationError as exc:
        problems = "; ".join(
            f"config.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"invalid run config: {problems}") from None


def create_run(session: Session, *, dataset_id: int, name: str, config: dict, user: User) -> Run:
    dataset = get_dataset(session, dataset_id)
    if not dataset.subjects:
        raise InvalidInput(f"dataset {dataset_id} has no subjects to train on")
    clean = validate_config(config)
    job = new_job(session, kind="train", user=user)
    run = Run(name=name, dataset_id=dataset.id, config=clean, job_id=job.id, created_by_id=user.id)
    session.add(run)
    session.flush()
    return run


def get_run(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    return run


def list_runs(
    session: Session,
    *,
    project_ids: list[int],
    dataset_id: int | None = None,
    status: str | None = None,
) -> list[Run]:
    query = (
        select(Run)
        .join(Dataset, Dataset.id == Run.dataset_id)
        .where(Dataset.project_id.in_(project_ids))
        .order_by(Run.id.desc())
    )
    if dataset_id is not None:
        query = query.where(Run.dataset_id == dataset_id)
    if status:
        query = query.where(Run.status == status)
    return list(session.scalars(query))


def run_metrics(session: Session, run: Run) -> list[RunMetric]:
    query = select(RunMetric).where(RunMetric.run_id == run.id).order_by(RunMetric.id)
    return list(session.scalars(query))
