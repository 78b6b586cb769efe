"""Training runs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask

from attrivue_core.imported import ModelInputSpec
from backend.api.deps import (
    AuditDep,
    CurrentUser,
    SessionDep,
    SettingsDep,
    StorageDep,
    authorize,
)
from backend.api.routes.jobs import EVENT_STREAM, event_stream
from backend.schemas.job import JobPublic
from backend.schemas.run import (
    MetricPoint,
    RunComparison,
    RunCreate,
    RunMetricsPublic,
    RunPredictionsPublic,
    RunPublic,
    RunSiteMetricsPublic,
    RunsPublic,
    SiteMetrics,
    SubjectPrediction,
)
from backend.services import jobs as job_svc
from backend.services import models as model_svc
from backend.services import predictions as predictions_svc
from backend.services import projects
from backend.services import runs as svc
from backend.services.datasets import get_dataset
from backend.services.errors import InvalidInput, NotFound, TooLarge

router = APIRouter(prefix="/runs", tags=["runs"])

MAX_COMPARED = 20


@router.get("", operation_id="listRuns")
def list_runs(
    user: CurrentUser,
    session: SessionDep,
    dataset_id: int | None = None,
    status: str | None = None,
    loss_setting: str | None = None,
    network: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> RunsPublic:
    """Runs, newest first; filters: dataset, status, loss setting, network, creation time."""
    runs = svc.list_runs(
        session,
        project_ids=projects.open_project_ids(session, user),
        dataset_id=dataset_id,
        status=status,
        loss_setting=loss_setting,
        network=network,
        created_after=created_after,
        created_before=created_before,
    )
    return RunsPublic(data=[RunPublic.model_validate(r) for r in runs], count=len(runs))


@router.post("", operation_id="createRun", status_code=201)
def create_run(
    body: RunCreate, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> RunPublic:
    """Create a training run and queue its job. With ``preset`` (GET /presets) the preset's
    values are applied first and the fields given in ``config`` override them."""
    authorize(session, user, get_dataset(session, body.dataset_id), projects.WRITE)
    run = svc.create_run(
        session,
        dataset_id=body.dataset_id,
        name=body.name,
        config=body.config,
        user=user,
        preset=body.preset,
    )
    session.commit()
    assert run.job is not None
    job_svc.dispatch(session, run.job, settings)
    return RunPublic.model_validate(run)


_IMPORT_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"description": "the model is larger than ATTRIVUE_MAX_MODEL_BYTES"},
    422: {
        "description": "not a model, a spec that does not fit the dataset, or refused by "
        "the worker's forward pass (the detail names the problem); nothing is stored"
    },
    503: {"description": "no cpu-queue worker checked the model in time; nothing is stored"},
}


@router.post("/import", operation_id="importModel", status_code=201, responses=_IMPORT_ERRORS)
def import_model(
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    audit: AuditDep,
    dataset_id: Annotated[int, Form()],
    name: Annotated[str, Form(min_length=1, max_length=200)],
    model: Annotated[
        UploadFile,
        File(description="a TorchScript file (torch.jit.save) or a zipped MONAI bundle"),
    ],
    grid: Annotated[
        list[int], Form(description="the working grid, three sizes (repeat the field)")
    ],
    channels: Annotated[int, Form(description="image channels the model takes")] = 1,
    intensity: Annotated[Literal["zscore", "percentile"], Form()] = "zscore",
    brain: Annotated[Literal["mask", "nonzero"], Form()] = "mask",
    logit_index: Annotated[
        int,
        Form(
            description="the output index (output[:, i]) that is the pathological logit, or "
            "the regression target's prediction"
        ),
    ] = 0,
    task: Annotated[
        Literal["classification", "regression"],
        Form(
            description="classification (output[:, i] is a logit) or regression (it is the "
            "predicted target; the run has no per-subject predictions, so no shortcut report)"
        ),
    ] = "classification",
) -> RunPublic:
    """Import a model as a run of the dataset: a TorchScript file or a MONAI bundle, with its
    input spec. A worker of the cpu queue loads it and runs it on one subject of the dataset
    (preprocessed as the spec says) before the run is stored; attribution maps then work on
    it as on a trained run. Refused (422, the detail names the problem) when the file is no
    model, the spec does not fit the dataset or the forward pass fails; nothing is kept."""
    dataset = get_dataset(session, dataset_id)
    authorize(session, user, dataset, projects.WRITE)
    try:
        spec = ModelInputSpec(
            channels=channels,
            grid=tuple(grid),  # type: ignore[arg-type]  # the length is validated here
            intensity=intensity,
            brain=brain,
            logit_index=logit_index,
            task=task,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"invalid input spec: {problems}") from None
    with storage.temp_file(suffix=".model") as upload:
        _copy_capped(model, upload, settings.max_model_bytes)
        run = model_svc.import_model(
            session,
            storage,
            settings,
            dataset=dataset,
            name=name,
            user=user,
            upload=upload,
            spec=spec,
        )
    audit("create", run, detail=f"imported {run.model_format}")
    return RunPublic.model_validate(run)


def _copy_capped(upload: UploadFile, dest: Any, limit: int) -> None:
    size = 0
    with open(dest, "wb") as out:
        while piece := upload.file.read(1024 * 1024):
            size += len(piece)
            if size > limit:
                raise TooLarge(f"model: larger than the limit of {limit} bytes")
            out.write(piece)


@router.get("/compare", operation_id="compareRuns")
def compare_runs(
    user: CurrentUser,
    session: SessionDep,
    ids: Annotated[list[int], Query(min_length=1, max_length=MAX_COMPARED)],
    metrics: Annotated[list[str] | None, Query()] = None,
) -> RunComparison:
    """Runs side by side: configs (differing keys flagged), final metrics, epoch series."""
    runs = [svc.get_run(session, run_id) for run_id in dict.fromkeys(ids)]
    for run in runs:
        authorize(session, user, run)
    return svc.compare_runs(session, runs, metric_names=metrics or ())


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


Split = Literal["train", "val", "test"]
_PREDICTION_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such run, or a finished run without per-subject predictions"},
    409: {"description": "the run has not succeeded (yet)"},
}


@router.get("/{run_id}/predictions", operation_id="getRunPredictions", responses=_PREDICTION_ERRORS)
def get_run_predictions(
    run_id: int, user: CurrentUser, session: SessionDep, split: Split | None = None
) -> RunPredictionsPublic:
    """The best weights' prediction for every subject (of one split with ``split``): logit,
    probability, label, split and site. Written when a classification run succeeds."""
    run = svc.get_run(session, run_id)
    authorize(session, user, run)
    rows = predictions_svc.run_predictions(session, run, split=split)
    return RunPredictionsPublic(
        run_id=run.id,
        best_epoch=run.best_epoch,
        best_metric=run.best_metric,
        data=[SubjectPrediction.model_validate(r) for r in rows],
        count=len(rows),
    )


@router.get(
    "/{run_id}/predictions.csv",
    operation_id="downloadRunPredictions",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}, **_PREDICTION_ERRORS},
)
def download_run_predictions(
    run_id: int, user: CurrentUser, session: SessionDep, split: Split | None = None
) -> Response:
    """The predictions as CSV: subject_id, subject_key, split, site, label, logit,
    probability."""
    run = svc.get_run(session, run_id)
    authorize(session, user, run)
    rows = predictions_svc.run_predictions(session, run, split=split)
    return Response(
        predictions_svc.predictions_csv(rows),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="run-{run.id}-predictions.csv"'},
    )


@router.get(
    "/{run_id}/site-metrics", operation_id="getRunSiteMetrics", responses=_PREDICTION_ERRORS
)
def get_run_site_metrics(
    run_id: int, user: CurrentUser, session: SessionDep
) -> RunSiteMetricsPublic:
    """AUROC, accuracy (at probability 0.5) and counts per split and site, from the run's
    per-subject predictions; ``site`` null: the split's sites together."""
    run = svc.get_run(session, run_id)
    authorize(session, user, run)
    rows = predictions_svc.run_predictions(session, run)
    return RunSiteMetricsPublic(
        run_id=run.id,
        threshold=predictions_svc.THRESHOLD,
        data=[SiteMetrics.model_validate(m) for m in predictions_svc.site_metrics(rows)],
    )


def _render(event: str, payload: Any) -> str:
    if event == "run":
        return RunPublic.model_validate(payload).model_dump_json()
    if event == "job":
        return JobPublic.model_validate(payload).model_dump_json()
    points = [MetricPoint.model_validate(p) for p in payload]
    return RunMetricsPublic(run_id=payload[0].run_id, data=points).model_dump_json()


@router.get(
    "/{run_id}/events",
    operation_id="streamRunEvents",
    response_class=StreamingResponse,
    responses=EVENT_STREAM,
)
def stream_run_events(
    run_id: int, request: Request, user: CurrentUser, session: SessionDep
) -> StreamingResponse:
    """Live run: `run` (RunPublic), `job` (JobPublic) and `metrics` (RunMetricsPublic, the new
    points only) events, now and at every change, until the run and its job end."""
    authorize(session, user, svc.get_run(session, run_id))
    session.close()  # the stream reads with sessions of its own; hold no connection meanwhile
    return event_stream(svc.run_changes(run_id), _render, request)


@router.post("/{run_id}/cancel", operation_id="cancelRun")
def cancel_run(
    run_id: int, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> JobPublic:
    """Cancel the run's training job."""
    run = svc.get_run(session, run_id)
    authorize(session, user, run, projects.WRITE)
    job = job_svc.get_job(session, run.job_id) if run.job_id else None
    if job is None:
        raise NotFound(f"run {run_id} has no job")
    job_svc.cancel_job(session, job)
    session.commit()
    if job.status == "cancelled":
        job_svc.revoke_job(job, settings)
    return JobPublic.model_validate(job)


@router.post("/{run_id}/retry", operation_id="retryRun", status_code=202)
def retry_run(
    run_id: int, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> RunPublic:
    """Queue a failed or cancelled run again; it resumes from its last checkpoint (409 else)."""
    run = svc.get_run(session, run_id)
    authorize(session, user, run, projects.WRITE)
    svc.retry_run(session, run, user=user)
    session.commit()
    assert run.job_id is not None
    job_svc.dispatch(session, job_svc.get_job(session, run.job_id), settings)
    return RunPublic.model_validate(run)


_EXPORT_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such run, or no checkpoint (yet)"},
    409: {"description": "nothing of this kind to export (an unfinished or imported run)"},
}


@router.get(
    "/{run_id}/checkpoint",
    operation_id="downloadRunCheckpoint",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, **_EXPORT_ERRORS},
)
def download_checkpoint(
    run_id: int, user: CurrentUser, session: SessionDep, storage: StorageDep, audit: AuditDep
) -> FileResponse:
    """The run's best checkpoint (``torch.load(..., weights_only=True)``: the weights under
    ``model``, the config that rebuilds the network, the epoch and its metrics); for a run
    imported from a TorchScript file, that file."""
    run = svc.get_run(session, run_id)
    authorize(session, user, run)
    path, name = model_svc.checkpoint_file(storage, run)
    audit("download", run, detail="checkpoint")
    return FileResponse(path, media_type="application/octet-stream", filename=name)


@router.get(
    "/{run_id}/bundle",
    operation_id="downloadRunBundle",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {}}}, **_EXPORT_ERRORS},
)
def download_bundle(
    run_id: int, user: CurrentUser, session: SessionDep, storage: StorageDep, audit: AuditDep
) -> FileResponse:
    """The trained run as a zipped MONAI bundle: ``configs/metadata.json`` (training config,
    metrics, the dataset's fingerprint), ``configs/inference.json`` (network, preprocessing,
    and the input spec POST /runs/import takes) and ``models/model.pt``."""
    run = svc.get_run(session, run_id)
    authorize(session, user, run)
    dataset = get_dataset(session, run.dataset_id)
    with storage.temp_file(suffix=".zip") as tmp:
        name = model_svc.write_bundle(storage, run, dataset, tmp)
        served = tmp.with_name(f"{tmp.name}.served")
        tmp.rename(served)  # the response removes it once sent
    audit("download", run, detail="bundle")
    return FileResponse(
        served,
        media_type="application/zip",
        filename=name,
        background=BackgroundTask(served.unlink, missing_ok=True),
    )
