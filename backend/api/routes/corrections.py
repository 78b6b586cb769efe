"""Runs from reviews (corrected target maps) and the epoch maps of watch subjects."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from backend.api.deps import CurrentUser, SessionDep, SettingsDep, StorageDep, authorize
from backend.schemas.corrections import (
    CorrectedTargetsPublic,
    EpochMapsPublic,
    FromReviewsCreate,
    RunCorrections,
)
from backend.schemas.run import RunPublic
from backend.services import corrected_targets as svc
from backend.services import jobs as job_svc
from backend.services import projects
from backend.services.runs import get_run

router = APIRouter(prefix="/runs", tags=["corrections"])

NIFTI: dict[int | str, dict[str, Any]] = {200: {"content": {"application/gzip": {}}}}


@router.get("/{run_id}/corrections", operation_id="getRunCorrections")
def get_run_corrections(
    run_id: int, user: CurrentUser, session: SessionDep, storage: StorageDep
) -> RunCorrections:
    """The reviews with a drawn correction on this run's maps, by subject."""
    run = get_run(session, run_id)
    authorize(session, user, run)
    return svc.run_corrections(session, storage, run)


@router.post("/{run_id}/from-reviews", operation_id="createRunFromReviews", status_code=201)
def create_run_from_reviews(
    run_id: int,
    body: FromReviewsCreate,
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> RunPublic:
    """A new run on this run's dataset and config (with ``config`` overrides) whose corrected
    subjects train on their target maps merged with the clinicians' corrections: missed
    lesion -> 1, spurious pathological relevance -> 0, the rest the run's own targets."""
    source = get_run(session, run_id)
    authorize(session, user, source, projects.WRITE)
    run = svc.launch_from_reviews(
        session,
        storage,
        source=source,
        name=body.name,
        config=body.config,
        policy=body.policy,
        user=user,
    )
    session.commit()
    assert run.job is not None
    job_svc.dispatch(session, run.job, settings)
    return RunPublic.model_validate(run)


@router.get("/{run_id}/corrected-targets", operation_id="listCorrectedTargets")
def list_corrected_targets(
    run_id: int, user: CurrentUser, session: SessionDep
) -> CorrectedTargetsPublic:
    """The merged target maps of a run from reviews: provenance, counts, and the lesion
    metrics of the earlier and this run on each corrected subject (once trained)."""
    run = get_run(session, run_id)
    authorize(session, user, run)
    return svc.list_corrected_targets(session, run)


@router.get(
    "/{run_id}/corrected-targets/{subject_id}/target.nii.gz",
    operation_id="getCorrectedTarget",
    response_class=FileResponse,
    responses=NIFTI,
)
def get_corrected_target(
    run_id: int, subject_id: int, user: CurrentUser, session: SessionDep, storage: StorageDep
) -> FileResponse:
    """A merged target map: uint8 on the subject's grid, 0, 1, 255 = unconstrained."""
    run = get_run(session, run_id)
    authorize(session, user, run)
    return FileResponse(
        svc.corrected_target_file(session, storage, run, subject_id),
        media_type="application/gzip",
        filename=f"run-{run_id}-target-{subject_id}.nii.gz",
    )


@router.get("/{run_id}/epoch-maps", operation_id="listEpochMaps")
def list_epoch_maps(
    run_id: int, user: CurrentUser, session: SessionDep, subject_id: int | None = None
) -> EpochMapsPublic:
    """The watch subjects' attribution maps stored after each epoch, with lesion metrics."""
    run = get_run(session, run_id)
    authorize(session, user, run)
    return svc.list_epoch_maps(session, run, subject_id)


@router.get(
    "/{run_id}/epoch-maps/{subject_id}/{epoch}.nii.gz",
    operation_id="getEpochMap",
    response_class=FileResponse,
    responses=NIFTI,
)
def get_epoch_map(
    run_id: int,
    subject_id: int,
    epoch: int,
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
) -> FileResponse:
    """One epoch map: int16 NIfTI on the working grid (scl_slope = attribution per unit)."""
    run = get_run(session, run_id)
    authorize(session, user, run)
    return FileResponse(
        svc.epoch_map_file(session, storage, run, subject_id, epoch),
        media_type="application/gzip",
        filename=f"run-{run_id}-subject-{subject_id}-epoch-{epoch}.nii.gz",
    )
