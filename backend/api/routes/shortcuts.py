"""A run's shortcut reports and cohort maps (issue 18): queue them, read them, load the maps."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import FileResponse

from backend.api.deps import CurrentUser, SessionDep, SettingsDep, StorageDep, authorize
from backend.models import CohortMap, ShortcutReport
from backend.schemas.shortcut import (
    CohortMapCreate,
    CohortMapPublic,
    CohortMapsPublic,
    ShortcutReportCreate,
    ShortcutReportPublic,
    ShortcutReportsPublic,
)
from backend.services import jobs as job_svc
from backend.services import projects
from backend.services import runs as run_svc
from backend.services import shortcuts as svc

router = APIRouter(prefix="/runs", tags=["shortcuts"])

NIFTI_GZ = "application/gzip"


def _report(row: ShortcutReport) -> ShortcutReportPublic:
    return ShortcutReportPublic.model_validate(row)


def _cohort(row: CohortMap) -> CohortMapPublic:
    return CohortMapPublic.model_validate(row)


@router.post(
    "/{run_id}/shortcut-reports",
    operation_id="createShortcutReport",
    status_code=201,
    responses={409: {"description": "the run has not succeeded, or has no maps to read"}},
)
def create_shortcut_report(
    run_id: int,
    body: ShortcutReportCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
) -> ShortcutReportPublic:
    """Queue a shortcut report over one split of a classification run: metrics per site, the
    counterfactual check (the logits with ``region`` erased by ``fill``) and the share of
    relevance outside the brain, with a flag and its reason when a site or region explains
    the decision."""
    run = run_svc.get_run(session, run_id)
    authorize(session, user, run, projects.WRITE)
    report = svc.create_report(
        session, run, split=body.split, params=body.model_dump(exclude={"split"}), user=user
    )
    session.commit()
    assert report.job is not None
    job_svc.dispatch(session, report.job, settings)
    return _report(report)


@router.get("/{run_id}/shortcut-reports", operation_id="listShortcutReports")
def list_shortcut_reports(
    run_id: int, user: CurrentUser, session: SessionDep
) -> ShortcutReportsPublic:
    """The run's shortcut reports, newest first, each with its job."""
    run = run_svc.get_run(session, run_id)
    authorize(session, user, run)
    rows = svc.reports_of(session, run)
    return ShortcutReportsPublic(data=[_report(r) for r in rows], count=len(rows))


@router.get("/{run_id}/shortcut-reports/{report_id}", operation_id="getShortcutReport")
def get_shortcut_report(
    run_id: int, report_id: int, user: CurrentUser, session: SessionDep
) -> ShortcutReportPublic:
    """One shortcut report with its job (its result and flags once the job succeeded)."""
    run = run_svc.get_run(session, run_id)
    authorize(session, user, run)
    return _report(svc.get_report(session, run, report_id))


@router.post(
    "/{run_id}/cohort-maps",
    operation_id="createCohortMap",
    status_code=201,
    responses={409: {"description": "the run has not succeeded, or fewer than two maps"}},
)
def create_cohort_map(
    run_id: int,
    body: CohortMapCreate,
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
) -> CohortMapPublic:
    """Queue the cohort map of one split and label: the mean signed map and the voxel-wise
    one-sample t-map of the subjects' newest ``method`` maps, on the first subject's grid."""
    run = run_svc.get_run(session, run_id)
    authorize(session, user, run, projects.WRITE)
    cohort = svc.create_cohort_map(
        session, run, split=body.split, label=body.label, method=body.method, user=user
    )
    session.commit()
    assert cohort.job is not None
    job_svc.dispatch(session, cohort.job, settings)
    return _cohort(cohort)


@router.get("/{run_id}/cohort-maps", operation_id="listCohortMaps")
def list_cohort_maps(run_id: int, user: CurrentUser, session: SessionDep) -> CohortMapsPublic:
    """The run's cohort maps, newest first, each with its job."""
    run = run_svc.get_run(session, run_id)
    authorize(session, user, run)
    rows = svc.cohort_maps_of(session, run)
    return CohortMapsPublic(data=[_cohort(r) for r in rows], count=len(rows))


@router.get("/{run_id}/cohort-maps/{cohort_id}", operation_id="getCohortMap")
def get_cohort_map(
    run_id: int, cohort_id: int, user: CurrentUser, session: SessionDep
) -> CohortMapPublic:
    """One cohort map with its job and the statistics of its mean and t-map."""
    run = run_svc.get_run(session, run_id)
    authorize(session, user, run)
    return _cohort(svc.get_cohort_map(session, run, cohort_id))


@router.get(
    "/{run_id}/cohort-maps/{cohort_id}/{which}.nii.gz",
    operation_id="downloadCohortMap",
    response_class=FileResponse,
    responses={200: {"content": {NIFTI_GZ: {}}}, 409: {"description": "not stored yet"}},
)
def download_cohort_map(
    run_id: int,
    cohort_id: int,
    which: Literal["mean", "t"],
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
) -> FileResponse:
    """The mean signed map or the t-map (float32, on the reference subject's grid)."""
    run = run_svc.get_run(session, run_id)
    authorize(session, user, run)
    cohort = svc.get_cohort_map(session, run, cohort_id)
    path = svc.cohort_file(storage, cohort, which)
    return FileResponse(path, media_type=NIFTI_GZ, filename=f"cohort-{cohort.id}-{which}.nii.gz")
