"""The training task: runs worker.ml.training.train for one run and stores its results."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from celery import shared_task

from backend.core.config import get_settings
from backend.core.db import session_scope
from backend.models import Dataset, Job, JobStatus, Run, RunMetric, RunPrediction, Subject
from backend.storage import get_storage
from worker.tasks.common import Claim, JobReporter, claimed, finish_job, owns, retrying

if TYPE_CHECKING:
    from worker.ml.training import ProgressEvent, SubjectPrediction

log = logging.getLogger(__name__)


def run_samples(run_id: int) -> tuple[dict, list]:
    """The run's config and its dataset's subjects as training samples: image, lesion mask,
    brain mask (a subject imported before brain masks existed gets one computed and stored
    now), label, split, site, target and any corrected target map."""
    from backend.services.brainmasks import ensure_brain_mask
    from backend.services.datasets import channel_paths
    from worker.ml.training import SubjectSample, as_split
    from worker.tasks.corrections import corrected_targets

    storage = get_storage()
    targets = corrected_targets(run_id)
    with session_scope() as session:
        run = session.get(Run, run_id)
        assert run is not None
        subjects = session.query(Subject).filter(Subject.dataset_id == run.dataset_id).all()
        dataset = session.get(Dataset, run.dataset_id)
        assert dataset is not None
        samples = [
            SubjectSample(
                subject_id=s.id,
                image=storage.absolute(s.image_path),
                mask=storage.absolute(s.mask_path) if s.mask_path else None,
                label=s.label,
                split=as_split(s.split),
                target=s.target,
                target_map=targets.get(s.id),
                brain_mask=ensure_brain_mask(session, storage, s),
                site=s.site or None,
                channels=tuple(storage.absolute(p) for p in channel_paths(s, dataset)[1:]),
            )
            for s in subjects
        ]
        return dict(run.config), samples


def _set_run_status(run_id: int, status: str, claim: Claim | None = None, **fields: object) -> None:
    """Write the run, unless ``claim`` is given and no longer holds the job."""

    def write() -> None:
        with session_scope() as session:
            if claim is not None and not owns(session, claim):
                return
            run = session.get(Run, run_id)
            if run is not None:
                run.status = status
                for key, value in fields.items():
                    setattr(run, key, value)

    retrying(write, what=f"writing run {run_id}")


def _store_epoch(claim: Claim, run_id: int, epoch: int, values: dict[str, float | None]) -> None:
    def write() -> None:
        with session_scope() as session:
            if not owns(session, claim):
                return
            # Re-delivered after a crash, an epoch may be stored again: replace, never duplicate.
            session.query(RunMetric).filter(
                RunMetric.run_id == run_id, RunMetric.epoch == epoch, RunMetric.step.is_(None)
            ).delete()
            for name, value in values.items():
                if value is None or not math.isfinite(value):
                    continue
                session.add(
                    RunMetric(run_id=run_id, epoch=epoch, step=None, name=name, value=value)
                )

    retrying(write, what=f"storing epoch {epoch} of run {run_id}")


def _store_predictions(claim: Claim, run_id: int, rows: list[SubjectPrediction]) -> None:
    """The best weights' prediction per subject, replacing any an earlier attempt stored;
    the subject's key is copied so that the rows read on their own (CSV export)."""

    def write() -> None:
        with session_scope() as session:
            if not owns(session, claim):
                return
            session.query(RunPrediction).filter(RunPrediction.run_id == run_id).delete()
            ids = [int(r.subject_id) for r in rows]
            keys = dict(
                session.query(Subject.id, Subject.subject_key).filter(Subject.id.in_(ids)).all()
            )
            for row in rows:
                subject_id = int(row.subject_id)
                if subject_id not in keys:  # deleted while the run trained
                    continue
                session.add(
                    RunPrediction(
                        run_id=run_id,
                        subject_id=subject_id,
                        subject_key=keys[subject_id],
                        split=row.split,
                        site=row.site or "",
                        label=row.label,
                        logit=row.logit,
                        probability=row.probability,
                    )
                )

    retrying(write, what=f"storing the predictions of run {run_id}")


def _instrumentation(event: ProgressEvent) -> dict[str, float | None]:
    """Per-epoch gradient instrumentation (worker.ml.gradients), stored as run metrics."""
    share = None
    if event.attribution_seconds is not None and event.step_seconds:
        share = event.attribution_seconds / event.step_seconds
    return {
        "grad_ratio": event.grad_ratio,
        "grad_cosine": event.grad_cosine,
        "grad_weight_a": event.grad_weight_a,
        "grad_norm_total": event.grad_norm_total,
        "clip_fraction": event.clip_fraction,
        "attribution_share": share,
    }


def run_training(job_id: int) -> None:
    with session_scope() as session:
        run = session.query(Run).filter(Run.job_id == job_id).one_or_none()
        run_id = run.id if run else None
    if run_id is None:
        log.warning("train job %s has no run; dropping it", job_id)
        return
    with claimed(job_id) as claim:
        if claim is None:
            with session_scope() as session:
                job = session.get(Job, job_id)
                cancelled = job is not None and job.status == JobStatus.cancelled.value
            if cancelled:
                _set_run_status(run_id, JobStatus.cancelled.value)
            return
        try:
            _train(claim, run_id)
        except Exception as exc:
            log.exception("training job %s failed", job_id)
            error = f"{type(exc).__name__}: {exc}"
            if finish_job(claim, JobStatus.failed, message="failed", error=error):
                _set_run_status(run_id, JobStatus.failed.value)


def _train(claim: Claim, run_id: int) -> None:
    from attrivue_core.configs import RunConfig
    from worker.ml.training import LAST_CHECKPOINT, TrainingCancelled, select_device, train
    from worker.tasks.corrections import EpochMapStore, store_corrected_metrics

    _set_run_status(run_id, "running", claim)
    settings = get_settings()
    reporter = JobReporter(claim)
    raw_config, samples = run_samples(run_id)
    config = RunConfig.model_validate(raw_config)
    if config.device == "auto" and settings.device != "auto":
        config = config.model_copy(update={"device": settings.device})
    where = {"epoch": 0, "step": 0, "steps": 0}
    checkpoint_dir = get_storage().checkpoint_dir(run_id)
    device = str(select_device(config.device))
    epoch_maps = EpochMapStore(claim, run_id, config, samples, device)

    def on_progress(event: ProgressEvent) -> None:
        message = f"epoch {event.epoch}/{event.epochs}"
        if event.kind == "step":
            where.update(epoch=event.epoch, step=event.step, steps=event.steps)
            if event.loss_c is not None:
                message += f", step {event.step}/{event.steps}, L_C {event.loss_c:.4f}"
        reporter.report(event.fraction, message, force=event.kind != "step")
        if event.kind == "epoch":
            values = {
                "loss_c": event.loss_c,
                "loss_a": event.loss_a,
                "grad_norm_c": event.grad_norm_c,
                "grad_norm_a": event.grad_norm_a,
                "lambda_a": event.lambda_a,
                "attribution_abs_mean": event.attribution_abs_mean,
                "attribution_seconds": event.attribution_seconds,
                "step_seconds": event.step_seconds,
                **_instrumentation(event),
            }
            values.update({k: v for k, v in event.metrics.items() if isinstance(v, int | float)})
            _store_epoch(claim, run_id, event.epoch, values)
            epoch_maps.on_epoch(event.epoch, checkpoint_dir / LAST_CHECKPOINT)

    try:
        result = train(
            config,
            samples,
            checkpoint_dir=checkpoint_dir,
            progress=on_progress,
            should_stop=reporter.cancel_requested,
        )
    except TrainingCancelled:
        if reporter.lost:
            log.warning("job %s was taken over by another worker; stopped", claim.job_id)
            return
        at = f"epoch {where['epoch']}, after step {where['step']}/{where['steps']}"
        message = f"cancelled ({at})" if where["steps"] else "cancelled before its first step"
        if finish_job(claim, JobStatus.cancelled, message=message):
            _set_run_status(run_id, JobStatus.cancelled.value)
        return
    store_corrected_metrics(claim, run_id, device)
    _store_predictions(claim, run_id, result.predictions)
    metrics = {f"test_{k}": v for k, v in result.test_metrics.items()}
    metrics["epochs_completed"] = result.epochs_completed
    metrics["resumed_from_epoch"] = result.resumed_from_epoch
    _set_run_status(
        run_id,
        "succeeded",
        claim,
        metrics=metrics,
        best_epoch=result.best_epoch or None,
        best_metric=result.best_metric,
    )
    finish_job(claim, JobStatus.succeeded, message=f"trained {result.epochs_completed} epochs")


@shared_task(name="attrivue.train", acks_late=True, reject_on_worker_lost=True)
def train_task(job_id: int) -> None:
    run_training(job_id)
