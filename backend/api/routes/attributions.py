"""Attribution maps: create as jobs, list, fetch the full map, the display map and statistics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from backend.api.deps import (
    AuditDep,
    CurrentUser,
    SessionDep,
    SettingsDep,
    StorageDep,
    authorize,
)
from backend.schemas.attribution import (
    AttributionBatchCreate,
    AttributionCreate,
    AttributionPublic,
    AttributionsPublic,
    AttributionStats,
    Split,
)
from backend.services import attributions as svc
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
    svc.dispatch_all(session, [row], settings)
    return AttributionPublic.model_validate(row)


@router.post("/batch", operation_id="createAttributionBatch", status_code=201)
def create_attribution_batch(
    body: AttributionBatchCreate, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> AttributionsPublic:
    """Compute maps for chosen subjects or a whole split of the run's dataset (one job each)."""
    authorize(session, user, get_run(session, body.run_id), projects.WRITE)
    rows = svc.create_attributions(session, body=body, user=user)
    session.commit()
    svc.dispatch_all(session, rows, settings)
    return AttributionsPublic(
        data=[AttributionPublic.model_validate(r) for r in rows], count=len(rows)
    )


@router.get("", operation_id="listAttributions")
def list_attributions(
    user: CurrentUser,
    session: SessionDep,
    run_id: int | None = None,
    subject_id: int | None = None,
    status: str | None = None,
    method: str | None = None,
    split: Split | None = None,
) -> AttributionsPublic:
    """Attribution maps, newest first, filtered by run, subject, status, method and split."""
    rows = svc.list_attributions(
        session,
        project_ids=projects.open_project_ids(session, user),
        run_id=run_id,
        subject_id=subject_id,
        status=status,
        method=method,
        split=split,
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
    attribution_id: int,
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
    audit: AuditDep,
) -> FileResponse:
    """The signed float32 map (positive: pathological), on the subject's grid and affine."""
    row = svc.get_attribution(session, attribution_id)
    authorize(session, user, row)
    path = svc.full_map(storage, row)
    audit("download", row, detail="map")
    return FileResponse(
        path,
        media_type=NIFTI_GZ,
        filename=f"attribution-{row.id}.nii.gz",
    )


@router.get(
    "/{attribution_id}/display.nii.gz",
    operation_id="downloadAttributionDisplayMap",
    response_class=FileResponse,
    responses={200: {"content": {NIFTI_GZ: {}}}},
)
def download_display_map(
    attribution_id: int,
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
    audit: AuditDep,
) -> FileResponse:
    """The map for the viewer: int8 with scl_slope = max|A| / 127, same grid and affine."""
    row = svc.get_attribution(session, attribution_id)
    authorize(session, user, row)
    path = svc.display_map(storage, row)
    audit("view", row, detail="display map")
    return FileResponse(
        path,
        media_type=NIFTI_GZ,
        filename=f"attribution-{row.id}-display.nii.gz",
    )


@router.get(
    "/{attribution_id}/prediction.nii.gz",
    operation_id="downloadAttributionPrediction",
    response_class=FileResponse,
    responses={200: {"content": {NIFTI_GZ: {}}}},
)
def download_prediction(
    attribution_id: int, user: CurrentUser, session: SessionDep, storage: StorageDep
) -> FileResponse:
    """Segmentation maps: the predicted lesions as connected components (int16, 0 background,
    1..n as the region's ``component`` numbers), on the subject's grid and affine."""
    row = svc.get_attribution(session, attribution_id)
    authorize(session, user, row)
    return FileResponse(
        svc.prediction_map(storage, row),
        media_type=NIFTI_GZ,
        filename=f"attribution-{row.id}-prediction.nii.gz",
    )


@router.get(
    "/{attribution_id}/channels/{index}.nii.gz",
    operation_id="downloadAttributionChannelMap",
    response_class=FileResponse,
    responses={200: {"content": {NIFTI_GZ: {}}}},
)
def download_channel_map(
    attribution_id: int,
    index: int,
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
    audit: AuditDep,
) -> FileResponse:
    """Multi-modal subjects: the map of input channel ``index`` (the subject's ``channels``,
    in the dataset's order); the channels' maps sum to the map. 404 for a channel the subject
    does not have (one image: none), 409 for a map stored without them (a region map)."""
    row = svc.get_attribution(session, attribution_id)
    authorize(session, user, row)
    path = svc.channel_map(session, storage, row, index)
    audit("download", row, detail=f"map channel {index}")
    return FileResponse(path, media_type=NIFTI_GZ, filename=f"attribution-{row.id}.c{index}.nii.gz")


@router.get(
    "/{attribution_id}/sd.nii.gz",
    operation_id="downloadAttributionSd",
    response_class=FileResponse,
    responses={200: {"content": {NIFTI_GZ: {}}}},
)
def download_sd(
    attribution_id: int, user: CurrentUser, session: SessionDep, storage: StorageDep
) -> FileResponse:
    """smoothgrad and gradient_shap maps: the per-voxel standard deviation of the per-sample
    maps (float32, the map's grid and affine); 409 for a deterministic method."""
    row = svc.get_attribution(session, attribution_id)
    authorize(session, user, row)
    return FileResponse(
        svc.uncertainty_map(storage, row, "sd"),
        media_type=NIFTI_GZ,
        filename=f"attribution-{row.id}-sd.nii.gz",
    )


@router.get(
    "/{attribution_id}/agreement.nii.gz",
    operation_id="downloadAttributionAgreement",
    response_class=FileResponse,
    responses={200: {"content": {NIFTI_GZ: {}}}},
)
def download_agreement(
    attribution_id: int, user: CurrentUser, session: SessionDep, storage: StorageDep
) -> FileResponse:
    """smoothgrad and gradient_shap maps: the per-voxel sign agreement, the share of samples
    whose sign is the mean map's (float32 in [0, 1], the map's grid and affine); 409 for a
    deterministic method."""
    row = svc.get_attribution(session, attribution_id)
    authorize(session, user, row)
    return FileResponse(
        svc.uncertainty_map(storage, row, "agreement"),
        media_type=NIFTI_GZ,
        filename=f"attribution-{row.id}-agreement.nii.gz",
    )


@router.get("/{attribution_id}/stats", operation_id="getAttributionStats")
def get_attribution_stats(
    attribution_id: int, user: CurrentUser, session: SessionDep, storage: StorageDep
) -> AttributionStats:
    """Signed summary of the map; lesion metrics with a mask; healthy subjects' positive share;
    all computed inside the subject's brain mask (``brain_voxels`` of them)."""
    row = svc.get_attribution(session, attribution_id)
    authorize(session, user, row)
    stats = svc.attribution_stats(session, storage, row)
    session.commit()  # a brain mask computed for this request is kept
    return AttributionStats.model_validate(stats)
