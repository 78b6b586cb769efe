"""Training runs: validate the config, store the run and its job, queue it; retry, compare."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Hashable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from attrivue_core.configs import RunConfig
from attrivue_core.memory import MemoryEstimate, training_memory
from attrivue_core.presets import UnknownPreset, apply_preset
from backend.core.config import get_settings
from backend.core.db import session_scope
from backend.models import Dataset, Job, JobStatus, Run, RunMetric, User
from backend.schemas.run import ComparedField, MetricSeries, RunComparison, RunPublic
from backend.services.datasets import get_dataset
from backend.services.errors import Conflict, InvalidInput, NotFound
from backend.services.jobs import POLL_SECONDS, TERMINAL, Change, follow, new_job

__all__ = [
    "RETRYABLE",
    "check_worker_memory",
    "compare_runs",
    "create_run",
    "get_run",
    "list_runs",
    "retry_run",
    "run_changes",
    "run_metrics",
    "validate_config",
]

RETRYABLE = (JobStatus.failed.value, JobStatus.cancelled.value)


def validate_config(raw: dict) -> dict:
    """The run config, validated by the science engine's own schema, with defaults filled in."""
    try:
        return RunConfig.model_validate(raw).model_dump(mode="json")
    except ValidationError as exc:
        problems = "; ".join(
            f"config.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"invalid run config: {problems}") from None


def check_worker_memory(estimate: MemoryEstimate, what: str) -> None:
    """Refuse (422) a job whose estimated memory exceeds ATTRIVUE_WORKER_MEMORY_GB."""
    budget = get_settings().worker_memory_gb
    if estimate.gib > budget:
        raise InvalidInput(
            f"{what} would need about {estimate.gib:,.1f} GiB of worker memory "
            f"({estimate.describe()}), more than the worker budget of {budget:g} GiB "
            "(ATTRIVUE_WORKER_MEMORY_GB): use a smaller grid, batch size or network, or fewer "
            "attribution steps"
        )


def create_run(
    session: Session,
    *,
    dataset_id: int,
    name: str,
    config: dict,
    user: User,
    preset: str | None = None,
) -> Run:
    """Validate a run and store it with its queued job (the caller commits and dispatches).

    With ``preset`` (``attrivue_core.presets``) the preset's values are applied first and the
    fields of ``config`` override them; the run records the preset's name.

    Raises:
        InvalidInput: An unknown preset, an invalid config, or a dataset it cannot train on.
    """
    if preset is not None:
        try:
            config = apply_preset(preset, config)
        except UnknownPreset as exc:
            raise InvalidInput(str(exc)) from None
    dataset = get_dataset(session, dataset_id)
    if not dataset.subjects:
        raise InvalidInput(f"dataset {dataset_id} has no subjects to train on")
    # The dataset fixes the channels: one per modality, in its order.
    config = {**config, "in_channels": len(dataset.modalities or []) or 1}
    clean = validate_config(config)
    check_worker_memory(training_memory(RunConfig.model_validate(clean)), "this run")
    known = {s.id for s in dataset.subjects}
    strangers = [s for s in clean.get("watch_subjects", []) if s not in known]
    if strangers:
        raise InvalidInput(
            f"config.watch_subjects: not subjects of dataset {dataset_id}: {strangers}"
        )
    _check_segmentation_masks(dataset, clean)
    if clean["task"] == "regression":
        _check_targets(dataset)
    job = new_job(session, kind="train", user=user)
    run = Run(
        name=name,
        dataset_id=dataset.id,
        config=clean,
        job_id=job.id,
        created_by_id=user.id,
        preset=preset,
    )
    session.add(run)
    session.flush()
    return run


def _check_segmentation_masks(dataset: Dataset, config: dict[str, Any]) -> None:
    """A segmentation run learns from lesion masks: every pathological training subject
    needs one, unless the run uses mixed supervision (some subjects by image label only)."""
    if config.get("task") != "segmentation":
        return
    train = [s for s in dataset.subjects if s.split == "train"]
    if not any(s.label == 1 and s.mask_path for s in train):
        raise InvalidInput(
            f"segmentation needs pathological training subjects with lesion masks; dataset "
            f"{dataset.id} has none"
        )
    mixed = config.get("seg_annotated_fraction", 1.0) < 1.0 or config.get("seg_constraint")
    missing = [s.subject_key for s in train if s.label == 1 and not s.mask_path]
    if missing and not mixed:
        listed = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise InvalidInput(
            f"segmentation needs a lesion mask for every pathological training subject (or "
            f"mixed supervision: seg_annotated_fraction < 1 or seg_constraint); without a "
            f"mask: {listed}"
        )


def _check_targets(dataset: Dataset) -> None:
    """A regression run needs a target on every training subject (validation and test
    subjects without one are left out of its metrics)."""
    train = [s for s in dataset.subjects if s.split == "train"]
    if not train:
        raise InvalidInput(f"dataset {dataset.id} has no subject in split 'train'")
    missing = [s.subject_key for s in train if s.target is None]
    if missing:
        shown = ", ".join(missing[:20]) + (
            f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        )
        raise InvalidInput(
            f"a regression run needs a target on every training subject; "
            f"{len(missing)} of {len(train)} have none: {shown} "
            "(set it in the Target column of the dataset page's subject table, or with the "
            "target column of an import manifest)"
        )


def get_run(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"run {run_id} not found")
    return run


def _utc(moment: datetime) -> datetime:
    """Aware and in UTC, as stored (a naive time is taken to be UTC already)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def list_runs(
    session: Session,
    *,
    project_ids: list[int],
    dataset_id: int | None = None,
    status: str | None = None,
    loss_setting: str | None = None,
    network: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> list[Run]:
    """Runs of the projects, newest first; every filter given must hold."""
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
    if loss_setting:
        query = query.where(Run.config["loss_setting"].as_string() == loss_setting)
    if network:
        query = query.where(Run.config["network"].as_string() == network)
    if created_after is not None:
        query = query.where(Run.created_at >= _utc(created_after))
    if created_before is not None:
        query = query.where(Run.created_at < _utc(created_before))
    return list(session.scalars(query))


def run_metrics(session: Session, run: Run) -> list[RunMetric]:
    query = select(RunMetric).where(RunMetric.run_id == run.id).order_by(RunMetric.id)
    return list(session.scalars(query))


def retry_run(session: Session, run: Run, *, user: User) -> Run:
    """Give a failed or cancelled run a new queued job; training resumes from its last
    checkpoint (``train`` finds ``last.pt``), and epochs it redoes replace their metrics."""
    job = session.get(Job, run.job_id) if run.job_id else None
    if run.status not in RETRYABLE or (job is not None and job.status not in TERMINAL):
        raise Conflict(f"run {run.id} is {run.status}; only failed or cancelled runs are retried")
    run.job_id = new_job(session, kind="train", user=user).id
    run.status = JobStatus.queued.value
    session.flush()
    return run


# --------------------------------------------------------------------------- comparison


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted keys (``lambda_a.value``); lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _side_by_side(rows: Sequence[dict[str, Any]]) -> list[ComparedField]:
    keys = sorted({key for row in rows for key in row})
    fields = []
    for key in keys:
        values = [row.get(key) for row in rows]
        distinct = {json.dumps(v, sort_keys=True, default=str) for v in values}
        fields.append(ComparedField(key=key, values=values, differs=len(distinct) > 1))
    return fields


def compare_runs(
    session: Session, runs: Sequence[Run], *, metric_names: Sequence[str] = ()
) -> RunComparison:
    """Runs side by side: every config key (flagged where the runs differ), the final metrics,
    and per-epoch series of ``metric_names`` (all epoch metrics when empty)."""
    config = _side_by_side([_flatten(r.config) for r in runs])
    query = (
        select(RunMetric)
        .where(RunMetric.run_id.in_([r.id for r in runs]), RunMetric.step.is_(None))
        .order_by(RunMetric.run_id, RunMetric.name, RunMetric.epoch)
    )
    if metric_names:
        query = query.where(RunMetric.name.in_(list(metric_names)))
    series: dict[tuple[int, str], MetricSeries] = {}
    for point in session.scalars(query):
        key = (point.run_id, point.name)
        if key not in series:
            series[key] = MetricSeries(run_id=point.run_id, name=point.name, epochs=[], values=[])
        series[key].epochs.append(point.epoch)
        series[key].values.append(point.value)
    order = {run.id: index for index, run in enumerate(runs)}
    return RunComparison(
        runs=[RunPublic.model_validate(r) for r in runs],
        config=config,
        differing=[f.key for f in config if f.differs],
        metrics=_side_by_side([r.metrics or {} for r in runs]),
        series=sorted(series.values(), key=lambda s: (s.name, order[s.run_id])),
    )


# --------------------------------------------------------------------------- live events


def _run_key(run: Run) -> Hashable:
    return (run.status, run.job_id, json.dumps(run.metrics, sort_keys=True, default=str))


def _job_key(job: Job | None) -> Hashable:
    if job is None:
        return None
    return (job.id, job.status, job.progress, job.message, job.error, job.attempts)


def run_changes(
    run_id: int, *, poll_seconds: float = POLL_SECONDS
) -> AsyncIterator[list[Change] | None]:
    """The run and its job now, then their changes and new metric points, until both end.

    Yields lists of ``("run", Run)``, ``("job", Job)`` and ``("metrics", [RunMetric])`` (only
    the points stored since the last poll; an epoch stored again after a resumption comes
    again: a point is identified by run, name, epoch and step), or ``None`` after a quiet poll.
    """
    seen: dict[str, Any] = {"run": object(), "job": object(), "metric_id": 0}

    def read() -> tuple[list[Change], bool]:
        with session_scope() as session:
            run = session.get(Run, run_id)
            if run is None:
                return [], True
            job = session.get(Job, run.job_id) if run.job_id else None
            # Read after the statuses: points stored before a run ended are all seen here.
            points = list(
                session.scalars(
                    select(RunMetric)
                    .where(RunMetric.run_id == run_id, RunMetric.id > seen["metric_id"])
                    .order_by(RunMetric.id)
                )
            )
        changes: list[Change] = []
        if _run_key(run) != seen["run"]:
            seen["run"] = _run_key(run)
            changes.append(("run", run))
        if _job_key(job) != seen["job"]:
            seen["job"] = _job_key(job)
            if job is not None:
                changes.append(("job", job))
        if points:
            seen["metric_id"] = points[-1].id
            changes.append(("metrics", points))
        finished = run.status in TERMINAL and (job is None or job.status in TERMINAL)
        return changes, finished

    return follow(read, poll_seconds=poll_seconds)
