"""Evidence checks of attribution maps: one job per request (worker.tasks.evidence)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.core.config import Settings
from backend.models import AttributionMap, EvidenceCheck, Job, Run, Subject, User
from backend.schemas.evidence import EvidenceCreate, EvidencePublic, RunEvidenceCreate
from backend.services.errors import Conflict, InvalidInput
from backend.services.jobs import dispatch, get_job, new_job

__all__ = [
    "create_check",
    "create_run_checks",
    "dispatch_check",
    "dispatch_checks",
    "list_for_map",
    "list_for_run",
    "to_public",
]


def create_check(
    session: Session, *, attribution: AttributionMap, body: EvidenceCreate, user: User
) -> EvidenceCheck:
    """A queued check of a computed classification map (not yet sent: commit, then dispatch).

    Raises:
        Conflict: The map is not computed yet.
        InvalidInput: The map explains a segmentation region (the checks score one logit),
            or data randomisation was asked for on an imported run (it retrains the network).
    """
    if attribution.status != "succeeded":
        raise Conflict(
            f"attribution {attribution.id} is {attribution.status}: check a computed map"
        )
    if attribution.region is not None:
        raise InvalidInput(
            f"attribution {attribution.id} explains a segmentation region; the evidence checks "
            "score a classifier's pathological logit"
        )
    run = session.get(Run, attribution.run_id)
    if run is not None and run.source == "imported" and "data_randomisation" in body.checks:
        raise InvalidInput(
            f"run {run.id} was imported: data randomisation trains the run's network again on "
            "permuted labels, and an imported network was not built here and cannot be "
            "retrained; ask for faithfulness and model_randomisation only"
        )
    job = new_job(session, kind="evidence", user=user)
    row = EvidenceCheck(
        attribution_id=attribution.id,
        run_id=attribution.run_id,
        checks=list(dict.fromkeys(body.checks)),
        results={"settings": {"data_epochs": body.data_epochs, "curve_steps": body.curve_steps}},
        reasons=[],
        job_id=job.id,
        created_by_id=user.id,
    )
    session.add(row)
    session.flush()
    return row


def create_run_checks(
    session: Session, *, run: Run, body: RunEvidenceCreate, user: User
) -> list[EvidenceCheck]:
    """One check per computed classification map of ``run`` on subjects of ``body.split``
    (of ``body.method`` when given); nothing is created when there is none.

    Raises:
        InvalidInput: No computed map of the run on that split (and method).
    """
    query = (
        select(AttributionMap)
        .join(Subject, Subject.id == AttributionMap.subject_id)
        .where(
            AttributionMap.run_id == run.id,
            AttributionMap.status == "succeeded",
            Subject.split == body.split,
        )
        .order_by(AttributionMap.id)
    )
    if body.method:
        query = query.where(AttributionMap.method == body.method)
    # A JSON column stores a missing region as JSON null, not SQL NULL: filter here.
    maps = [m for m in session.scalars(query) if m.region is None]
    if not maps:
        which = f"{body.method} maps" if body.method else "maps"
        raise InvalidInput(f"run {run.id} has no computed {which} on the {body.split} split")
    return [create_check(session, attribution=m, body=body, user=user) for m in maps]


def dispatch_checks(session: Session, rows: list[EvidenceCheck], settings: Settings) -> None:
    """Send the committed checks' jobs in order (the first refusal stops and raises)."""
    for row in rows:
        dispatch_check(session, row, settings)


def dispatch_check(session: Session, row: EvidenceCheck, settings: Settings) -> None:
    """Send the committed check's job (the row fails with it if the broker refuses)."""
    assert row.job_id is not None
    dispatch(session, get_job(session, row.job_id), settings)


def list_for_map(session: Session, attribution_id: int) -> list[EvidenceCheck]:
    """The map's checks, newest first."""
    query = (
        select(EvidenceCheck)
        .where(EvidenceCheck.attribution_id == attribution_id)
        .order_by(EvidenceCheck.id.desc())
    )
    return list(session.scalars(query))


def list_for_run(session: Session, run_id: int) -> list[EvidenceCheck]:
    """The checks of all maps of a run, newest first."""
    query = (
        select(EvidenceCheck)
        .where(EvidenceCheck.run_id == run_id)
        .order_by(EvidenceCheck.id.desc())
    )
    return list(session.scalars(query))


def to_public(session: Session, row: EvidenceCheck) -> EvidencePublic:
    """The check as the API answers it, with its job's progress and message."""
    job = session.get(Job, row.job_id) if row.job_id is not None else None
    results = {k: v for k, v in row.results.items() if k != "settings"}
    return EvidencePublic.model_validate(
        {
            "id": row.id,
            "attribution_id": row.attribution_id,
            "run_id": row.run_id,
            "checks": row.checks,
            "status": row.status,
            "results": results,
            "verdict": row.verdict,
            "reasons": row.reasons,
            "error": row.error if row.error else (job.error if job is not None else None),
            "job_id": row.job_id,
            "created_at": row.created_at,
            "progress": job.progress if job is not None else 0.0,
            "message": job.message if job is not None else "",
        }
    )
