"""Attribution maps: create as a job, list, fetch the map."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

from backend.api.deps import CurrentUser, SessionDep, SettingsDep, StorageDep, authorize
from backend.schemas.attribution import AttributionCreate, AttributionPublic, AttributionsPublic
from backend.services import attributions as svc
from backend.services import jobs as job_svc
from backend.services import projects
from backend.services.runs import get_run

router = APIRouter(prefix="/attributions", tags=["attributions"])

NIFTI_GZ = "application/gzip"


@router.post("", operation_id="createAttribution", status_code=201)
def create_attribution(
    body: AttributionCreate, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> AttributionPublic:
    """Compute an attribution map for one subject with a trained run's model (a job)."""
    authorize(session, user, get_run(session, body.run_id), projects.WRITE)
    row = svc.create_attribution(session, body=body, user=user)
    session.commit()
    assert row.job_id is not None
    job_svc.dispatch(session, job_svc.get_job(session, row.job_id), settings)
    return AttributionPublic.model_validate(row)


@router.get("", operation_id="listAttributions")
def list_attributions(
    user: CurrentUser,
    session: SessionDep,
    run_id: int | None = None,
    subject_id: int | None = None,
    status: str | None = None,
) -> AttributionsPublic:
    """Attribution maps, newest first, filtered by run, subject and status."""
    rows = svc.list_attributions(
        session,
        project_ids=projects.member_project_ids(session, user),
        run_id=run_id,
        subject_id=subject_id,
        status=status,
    )
    return AttributionsPublic(
        data=[AttributionPublic.model_validate(r) for r in rows], count=len(rows)
    )


@router.get("/{attribution_id}", operation_id="getAttribution")
def get_attribution(
    attribution_id: int, user: CurrentUser, session: SessionDep
) -> AttributionPublic:
    """One attribution map's record: method, parameters, convergence delta, statistics."""
    row = svc.get_attribution(session, attribution_id)
    authorize(session, user, row)
    return AttributionPublic.model_validate(row)


@router.get(
    "/{attribution_id}/map.nii.gz",
    operation_id="downloadAttributionMap",
    response_class=FileResponse,
    responses={200: {"content": {NIFTI_GZ: {}}}},
)
def download_map(
    attribution_id: int, user: CurrentUser, session: SessionDep, storage: StorageDep
) -> FileResponse:
    """The signed float32 map (positive: pathological), on the subject's grid and affine."""
    row = svc.get_attribution(session, attribution_id)
    authorize(session, user, row)
    if row.status != "succeeded" or not row.path:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"attribution {attribution_id} is {row.status}"
        )
    return FileResponse(
        storage.absolute(row.path), media_type=NIFTI_GZ, filename=f"attribution-{row.id}.nii.gz"
    )
