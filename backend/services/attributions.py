"""Attribution maps: one job per (run, subject, method, parameters)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.models import AttributionMap, Dataset, Run, User
from backend.schemas.attribution import AttributionCreate
from backend.services.datasets import get_subject
from backend.services.errors import Conflict, InvalidInput, NotFound
from backend.services.jobs import new_job
from backend.services.runs import get_run
from worker.ml.configs import AttributionConfig

__all__ = ["create_attribution", "get_attribution", "list_attributions"]


def validate_params(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The method's parameters, validated by the science engine's schema, defaults filled."""
    try:
        config = AttributionConfig.model_validate({**params, "method": method})
    except ValidationError as exc:
        problems = "; ".join(
            f"params.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"invalid parameters for {method}: {problems}") from None
    return config.model_dump(mode="json", exclude={"method"})


def create_attribution(session: Session, *, body: AttributionCreate, user: User) -> AttributionMap:
    params = validate_params(body.method, body.params)
    run = get_run(session, body.run_id)
    subject = get_subject(session, body.subject_id)
    if subject.dataset_id != run.dataset_id:
        raise Conflict(
            f"subject {subject.id} is not in dataset {run.dataset_id} that run {run.id} used"
        )
    if run.status != "succeeded":
        raise Conflict(f"run {run.id} has not finished training (status {run.status})")
    job = new_job(session, kind="attribute", user=user)
    row = AttributionMap(
        run_id=run.id,
        subject_id=subject.id,
        method=body.method,
        params=params,
        job_id=job.id,
        created_by_id=user.id,
    )
    session.add(row)
    session.flush()
    return row


def get_attribution(session: Session, attribution_id: int) -> AttributionMap:
    row = session.get(AttributionMap, attribution_id)
    if row is None:
        raise NotFound(f"attribution {attribution_id} not found")
    return row


def list_attributions(
    session: Session,
    *,
    project_ids: list[int],
    run_id: int | None = None,
    subject_id: int | None = None,
    status: str | None = None,
) -> list[AttributionMap]:
    query = (
        select(AttributionMap)
        .join(Run, Run.id == AttributionMap.run_id)
        .join(Dataset, Dataset.id == Run.dataset_id)
        .where(Dataset.project_id.in_(project_ids))
        .order_by(AttributionMap.id.desc())
    )
    if run_id is not None:
        query = query.where(AttributionMap.run_id == run_id)
    if subject_id is not None:
        query = query.where(AttributionMap.subject_id == subject_id)
    if status:
        query = query.where(AttributionMap.status == status)
    return list(session.scalars(query))
