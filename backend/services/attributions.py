"""Attribution maps: one job per (run, subject, method, parameters)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from attrivue_core.configs import AttributionConfig, RegionSpec, RunConfig
from attrivue_core.memory import attribution_memory
from backend.core.config import Settings
from backend.models import AttributionMap, Dataset, JobStatus, Run, Subject, User
from backend.schemas.attribution import AttributionBatchCreate, AttributionCreate
from backend.services import maps
from backend.services.brainmasks import ensure_brain_mask
from backend.services.datasets import get_subject
from backend.services.errors import Conflict, InvalidInput, NotFound, Unavailable
from backend.services.jobs import dispatch, get_job, new_job
from backend.services.projects import require_object
from backend.services.runs import check_worker_memory, get_run
from backend.storage import Storage

__all__ = [
    "attribution_stats",
    "create_attribution",
    "create_attributions",
    "dispatch_all",
    "display_map",
    "full_map",
    "get_attribution",
    "list_attributions",
    "prediction_map",
    "prediction_path",
    "channel_map",
    "channel_map_path",
    "region_for",
    "uncertainty_map",
    "uncertainty_path",
]


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


def _check_memory(run: Run, method: str, params: dict[str, Any]) -> None:
    """Refuse a map whose estimated memory exceeds the worker budget (before queueing)."""
    try:
        config = RunConfig.model_validate(run.config)
    except ValidationError:  # a config stored by an older version: nothing to estimate from
        return
    estimate = attribution_memory(
        config, AttributionConfig.model_validate({**params, "method": method})
    )
    check_worker_memory(estimate, f"this {method} map")


def _check_healthy(session: Session, run: Run, params: dict[str, Any]) -> None:
    """Refuse a healthy baseline or healthy references when the run has no healthy subject."""
    wanted = params.get("baseline") == "healthy_mean" or params.get("references") == "healthy"
    if not wanted:
        return
    found = session.scalar(
        select(Subject.id)
        .where(Subject.dataset_id == run.dataset_id)
        .where(Subject.split == "train", Subject.label == 0)
        .limit(1)
    )
    if found is None:
        what = (
            "baseline 'healthy_mean'"
            if params.get("baseline") == "healthy_mean"
            else ("references 'healthy'")
        )
        raise InvalidInput(
            f"params.{what.split()[0]} {what.split()[1]} needs healthy training subjects: "
            f"dataset {run.dataset_id} of run {run.id} has no subject with label 0 in the "
            "train split"
        )


def _require_trained(run: Run) -> None:
    if run.status != "succeeded":
        raise Conflict(f"run {run.id} has not finished training (status {run.status})")


# Quadratures of the project's own Integrated Gradients, which computes region maps.
_REGION_QUADRATURES = ("gausslegendre", "riemann_middle")


def region_for(
    run: Run, method: str, params: dict[str, Any], region: RegionSpec | None
) -> dict[str, Any] | None:
    """The region a map of ``run`` explains: segmentation runs explain a region of their
    output (default: the whole predicted mask) with Integrated Gradients from the zero image;
    classification runs explain their logit and take no region."""
    if run.config.get("task", "classification") != "segmentation":
        if region is not None:
            raise InvalidInput(f"region applies to segmentation runs; run {run.id} classifies")
        return None
    if method != "integrated_gradients":
        raise InvalidInput(
            f"segmentation run {run.id} is explained with integrated_gradients (region "
            f"attribution), not {method}"
        )
    if params.get("baseline") != "zero":
        raise InvalidInput("region attribution uses the zero baseline: params.baseline 'zero'")
    if params.get("target_delta") is not None:
        raise InvalidInput(
            "region attribution integrates with a fixed params.steps; params.target_delta "
            "applies to classification runs"
        )
    if params.get("riemann_method") not in _REGION_QUADRATURES:
        raise InvalidInput(
            f"region attribution supports params.riemann_method in {list(_REGION_QUADRATURES)}"
        )
    return (region or RegionSpec()).model_dump(mode="json", exclude_none=True)


def _new_map(
    session: Session,
    *,
    run: Run,
    subject_id: int,
    method: str,
    params: dict,
    user: User,
    region: dict[str, Any] | None = None,
) -> AttributionMap:
    job = new_job(session, kind="attribute", user=user)
    row = AttributionMap(
        run_id=run.id,
        subject_id=subject_id,
        method=method,
        params=params,
        region=region,
        job_id=job.id,
        created_by_id=user.id,
    )
    session.add(row)
    return row


def create_attribution(session: Session, *, body: AttributionCreate, user: User) -> AttributionMap:
    params = validate_params(body.method, body.params)
    run = get_run(session, body.run_id)
    subject = get_subject(session, body.subject_id)
    if subject.dataset_id != run.dataset_id:
        # A subject of a project the user is not in answers as one that does not exist.
        require_object(session, user, subject)
        raise Conflict(
            f"subject {subject.id} is not in dataset {run.dataset_id} that run {run.id} used"
        )
    region = region_for(run, body.method, params, body.region)
    _require_trained(run)
    _check_healthy(session, run, params)
    _check_memory(run, body.method, params)
    row = _new_map(
        session,
        run=run,
        subject_id=subject.id,
        method=body.method,
        params=params,
        user=user,
        region=region,
    )
    session.flush()
    return row


def _batch_subjects(session: Session, run: Run, body: AttributionBatchCreate) -> list[int]:
    """The subject ids of the batch, in the order given (duplicates dropped) or by id."""
    in_dataset = select(Subject.id).where(Subject.dataset_id == run.dataset_id)
    if body.split is not None:
        ids = list(
            session.scalars(in_dataset.where(Subject.split == body.split).order_by(Subject.id))
        )
        if not ids:
            raise InvalidInput(
                f"dataset {run.dataset_id} has no subjects in the {body.split} split"
            )
        return ids
    wanted = list(dict.fromkeys(body.subject_ids or []))
    found = set(session.scalars(in_dataset.where(Subject.id.in_(wanted))))
    missing = [i for i in wanted if i not in found]
    if missing:
        listed = ", ".join(str(i) for i in missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise InvalidInput(
            f"subjects not in dataset {run.dataset_id} that run {run.id} used: {listed}"
        )
    return wanted


def create_attributions(
    session: Session, *, body: AttributionBatchCreate, user: User
) -> list[AttributionMap]:
    """One map (and job) per subject of the batch; nothing is created if any subject is wrong."""
    params = validate_params(body.method, body.params)
    run = get_run(session, body.run_id)
    subject_ids = _batch_subjects(session, run, body)
    region = region_for(run, body.method, params, None)
    _require_trained(run)
    _check_healthy(session, run, params)
    _check_memory(run, body.method, params)
    rows = [
        _new_map(
            session,
            run=run,
            subject_id=s,
            method=body.method,
            params=params,
            user=user,
            region=region,
        )
        for s in subject_ids
    ]
    session.flush()
    return rows


def dispatch_all(session: Session, rows: Sequence[AttributionMap], settings: Settings) -> None:
    """Send the committed jobs of ``rows``; if the broker refuses one, the rest fail with it.

    Without that, the maps after the refused one would stay queued with no task to run them.
    """
    for index, row in enumerate(rows):
        assert row.job_id is not None
        try:
            dispatch(session, get_job(session, row.job_id), settings)
        except Unavailable:
            now = datetime.now(UTC)
            for failed in rows[index:]:
                failed.status = JobStatus.failed.value
                if failed is not row and failed.job_id is not None:
                    job = get_job(session, failed.job_id)
                    job.status = JobStatus.failed.value
                    job.error = "not queued: the broker refused an earlier job of the batch"
                    job.finished_at = now
            session.commit()
            raise


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
    method: str | None = None,
    split: str | None = None,
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
    if method:
        query = query.where(AttributionMap.method == method)
    if split:
        query = query.join(Subject, Subject.id == AttributionMap.subject_id).where(
            Subject.split == split
        )
    return list(session.scalars(query))


def full_map(storage: Storage, row: AttributionMap) -> Path:
    """The stored float32 map, or Conflict while it is not computed."""
    if row.status != "succeeded" or not row.path:
        raise Conflict(f"attribution {row.id} is {row.status}")
    path = storage.absolute(row.path)
    if not path.is_file():
        raise Conflict(f"the map file of attribution {row.id} is missing")
    return path


def prediction_path(map_path: Path) -> Path:
    """Where a segmentation map's predicted components are stored, beside the map."""
    return map_path.with_name(map_path.name.replace(".nii.gz", "-prediction.nii.gz"))


# Methods that draw samples: their maps have uncertainty volumes (worker.ml.attribution).
STOCHASTIC_METHODS = ("smoothgrad", "gradient_shap")
UncertaintyKind = Literal["sd", "agreement"]


def uncertainty_path(map_path: Path, kind: UncertaintyKind) -> Path:
    """Where a stochastic map's uncertainty volume ``kind`` is stored, beside the map."""
    return map_path.with_name(map_path.name.replace(".nii.gz", f"-{kind}.nii.gz"))


def uncertainty_map(storage: Storage, row: AttributionMap, kind: UncertaintyKind) -> Path:
    """The per-voxel standard deviation (``sd``) or sign agreement (``agreement``) over the
    samples of a smoothgrad or gradient_shap map; Conflict for a deterministic method."""
    if row.method not in STOCHASTIC_METHODS:
        raise Conflict(
            f"attribution {row.id} ({row.method}) is deterministic: it has no uncertainty "
            f"volumes (only {' and '.join(STOCHASTIC_METHODS)} draw samples)"
        )
    full = full_map(storage, row)
    path = uncertainty_path(full, kind)
    if not path.is_file():
        raise Conflict(
            f"attribution {row.id} was stored without uncertainty volumes (computed before "
            "they were kept): compute the map again"
        )
    return path


def channel_map_path(map_path: Path, index: int) -> Path:
    """Where the map of input channel ``index`` of a multi-modal subject is stored, beside
    the map (``<id>.c0.nii.gz``, ...); the map itself is their sum."""
    return map_path.with_name(map_path.name.replace(".nii.gz", f".c{index}.nii.gz"))


def channel_map(session: Session, storage: Storage, row: AttributionMap, index: int) -> Path:
    """The map of one input channel (modality, in the dataset's order) of a map of a
    multi-modal subject; NotFound for a channel the subject does not have, Conflict for a
    map stored without them (a region map, or one computed before they were kept)."""
    full = full_map(storage, row)
    subject = get_subject(session, row.subject_id)
    names = subject.dataset.modalities or []
    if not names:
        raise NotFound(f"subject {subject.id} has one image: its map is the only channel")
    if not 0 <= index < len(names):
        raise NotFound(f"subject {subject.id} has {len(names)} channels; no channel {index}")
    path = channel_map_path(full, index)
    if not path.is_file():
        raise Conflict(f"attribution {row.id} was stored without per-channel maps")
    return path


def prediction_map(storage: Storage, row: AttributionMap) -> Path:
    """The predicted connected components (int16, 0 background) of a segmentation map."""
    full = full_map(storage, row)
    if row.region is None:
        raise Conflict(f"attribution {row.id} explains a classifier: it has no prediction")
    path = prediction_path(full)
    if not path.is_file():
        raise Conflict(f"the prediction file of attribution {row.id} is missing")
    return path


def display_map(storage: Storage, row: AttributionMap) -> Path:
    """The int8 display map (scl_slope set), built on first request and cached."""
    return maps.display_map(full_map(storage, row))


def attribution_stats(session: Session, storage: Storage, row: AttributionMap) -> dict[str, Any]:
    """Summary and lesion metrics of a computed map (keys of ``AttributionStats``)."""
    full = full_map(storage, row)
    subject = get_subject(session, row.subject_id)
    mask = storage.absolute(subject.mask_path) if subject.mask_path else None
    brain = ensure_brain_mask(session, storage, subject)
    try:
        stats = maps.cached_stats(full, mask=mask, label=subject.label, brain=brain)
    except ValueError as exc:  # a mask off the map's grid
        raise Conflict(f"attribution {row.id}: {exc}") from None
    return {**stats, "attribution_id": row.id, "subject_id": subject.id, "label": subject.label}
