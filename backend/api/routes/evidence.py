"""Evidence checks of attribution maps: start them (a job), read them per map and per run."""

from __future__ import annotations

from fastapi import APIRouter

from backend.api.deps import CurrentUser, SessionDep, SettingsDep, authorize
from backend.schemas.evidence import (
    EvidenceCreate,
    EvidenceListPublic,
    EvidencePublic,
    RunEvidenceCreate,
)
from backend.services import evidence as svc
from backend.services import projects
from backend.services.attributions import get_attribution
from backend.services.runs import get_run

router = APIRouter(tags=["evidence"])


@router.post(
    "/attributions/{attribution_id}/evidence", operation_id="createEvidenceCheck", status_code=201
)
def create_evidence_check(
    attribution_id: int,
    body: EvidenceCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
) -> EvidencePublic:
    """Run sanity checks and faithfulness on a computed map (a job)."""
    row = get_attribution(session, attribution_id)
    authorize(session, user, row, projects.WRITE)
    check = svc.create_check(session, attribution=row, body=body, user=user)
    session.commit()
    svc.dispatch_check(session, check, settings)
    return svc.to_public(session, check)


@router.get("/attributions/{attribution_id}/evidence", operation_id="listMapEvidence")
def list_map_evidence(
    attribution_id: int, user: CurrentUser, session: SessionDep
) -> EvidenceListPublic:
    """The map's evidence checks, newest first, with their numbers, curves and verdicts."""
    row = get_attribution(session, attribution_id)
    authorize(session, user, row)
    rows = svc.list_for_map(session, attribution_id)
    return EvidenceListPublic(data=[svc.to_public(session, r) for r in rows], count=len(rows))


@router.post("/runs/{run_id}/evidence", operation_id="createRunEvidence", status_code=201)
def create_run_evidence(
    run_id: int,
    body: RunEvidenceCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
) -> EvidenceListPublic:
    """The same checks for every computed map of the run on one split (one job per map)."""
    run = get_run(session, run_id)
    authorize(session, user, run, projects.WRITE)
    rows = svc.create_run_checks(session, run=run, body=body, user=user)
    session.commit()
    svc.dispatch_checks(session, rows, settings)
    return EvidenceListPublic(data=[svc.to_public(session, r) for r in rows], count=len(rows))


@router.get("/runs/{run_id}/evidence", operation_id="listRunEvidence")
def list_run_evidence(run_id: int, user: CurrentUser, session: SessionDep) -> EvidenceListPublic:
    """The evidence checks of every map of the run, newest first."""
    authorize(session, user, get_run(session, run_id))
    rows = svc.list_for_run(session, run_id)
    return EvidenceListPublic(data=[svc.to_public(session, r) for r in rows], count=len(rows))
