"""The attribution task: a Captum map for one subject, stored as NIfTI with its affine."""

from __future__ import annotations

import errno
import logging
import math
import os

from celery import shared_task

from backend.core import queue
from backend.core.config import get_settings
from backend.core.db import session_scope
from backend.models import AttributionMap, Job, JobStatus, Run, Subject
from backend.storage import get_storage
from worker.tasks.common import (
    Claim,
    JobReporter,
    claimed,
    finish_job,
    set_fields,
    subject_channels,
)

log = logging.getLogger(__name__)
# A full disk, a quota, or a file size limit: the write failed for want of room.
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# The run's mean healthy training image (the healthy_mean baseline), beside its checkpoints:
# healthy_mean-<digest of the subjects' stored files>.npy, so that a changed set is recomputed.
HEALTHY_MEAN_PREFIX = "healthy_mean"
# Methods that read AttributionConfig.baseline (attrivue_core.configs.METHOD_FIELDS).
_BASELINE_METHODS = frozenset({"integrated_gradients", "deeplift", "occlusion"})


def _set(attribution_id: int, claim: Claim | None = None, **fields: object) -> None:
    """Write the map's row, unless ``claim`` is given and no longer holds the job."""
    set_fields(
        AttributionMap,
        attribution_id,
        claim,
        what=f"writing attribution {attribution_id}",
        **fields,
    )


def _accuracy_progress(reporter: JobReporter, settings):
    """IG to a requested accuracy: report each round's points and relative delta."""
    target, cap = settings.target_delta, settings.max_points

    def report(points: int, relative: float) -> None:
        reporter.report(
            0.3 + 0.6 * min(1.0, points / cap),
            f"integrated_gradients: {points} points, relative delta {relative:.2%} "
            f"(target {target:.2%}, at most {cap} points)",
            force=True,
        )

    return report


def _finite(value: float | None) -> float | None:
    """JSON has no NaN: undefined values are stored as null."""
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)


def _device(requested: str) -> str:
    import torch

    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def _region_map(model, config, image_path, region: dict, params: dict, device: str, out):
    """A segmentation map: region IG, with the predicted components saved beside the map."""
    import numpy as np

    from attrivue_core.configs import AttributionConfig, RegionSpec
    from attrivue_core.io import save_nifti
    from backend.services.attributions import prediction_path
    from worker.ml.segmentation import attribute_region_subject

    settings = AttributionConfig(method="integrated_gradients", **params)
    method = settings.riemann_method
    if method != "gausslegendre" and method != "riemann_middle":  # the API refuses the others
        raise ValueError(f"a region's map integrates by gausslegendre or riemann_middle: {method}")
    result = attribute_region_subject(
        model,
        config,
        image_path,
        RegionSpec.model_validate(region),
        steps=settings.steps,
        method=method,
        internal_batch_size=settings.internal_batch_size,
        device=device,
    )
    save_nifti(prediction_path(out), result.prediction.astype(np.int16), result.affine)
    return result


# A healthy training subject: [image, brain mask or None, images of channels 1..], stored paths.
Healthy = list[str | None]


def _healthy_inputs(session, run: Run) -> list[Healthy]:
    """The stored paths of the run's healthy training subjects: image, brain mask, and the
    images of its other channels (a multi-modal dataset; none for one modality)."""
    from backend.services.datasets import channel_paths

    rows = (
        session.query(Subject)
        .filter(Subject.dataset_id == run.dataset_id, Subject.split == "train", Subject.label == 0)
        .order_by(Subject.id)
        .all()
    )
    return [[row.image_path, row.brain_path, *channel_paths(row, row.dataset)[1:]] for row in rows]


def _on_grid_args(storage, healthy: list[Healthy]) -> tuple[list, list, list]:
    """Absolute images, brain masks and channel lists of ``healthy`` (``load_on_grid``)."""
    images = [storage.absolute(entry[0]) for entry in healthy]
    brains = [storage.absolute(entry[1]) if entry[1] else None for entry in healthy]
    channels = [[storage.absolute(p) for p in entry[2:]] for entry in healthy]
    return images, brains, channels


def _healthy_mean(storage, run_id: int, config, healthy: list[Healthy]):
    """The run's mean healthy training image on the working grid, computed once and cached
    beside its checkpoints (written atomically; its name carries a digest of the subjects'
    files, so that adding or replacing a healthy training subject computes it again)."""
    import hashlib
    import json

    import numpy as np
    import torch

    from worker.ml.attribution.captum_eval import mean_on_grid

    digest = hashlib.sha256(json.dumps(healthy).encode()).hexdigest()[:16]
    path = storage.checkpoint_dir(run_id) / f"{HEALTHY_MEAN_PREFIX}-{digest}.npy"
    if path.is_file():
        return torch.from_numpy(np.load(path))
    if not healthy:
        raise ValueError(f"run {run_id}'s dataset has no healthy subject in the train split")
    mean = mean_on_grid(config, *_on_grid_args(storage, healthy))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    with open(tmp, "wb") as handle:
        np.save(handle, mean.numpy())
    os.replace(tmp, path)
    return mean


def _healthy_references(storage, config, healthy: list[Healthy]):
    """The run's healthy training images on the working grid, gradient_shap's references."""
    from worker.ml.attribution.captum_eval import load_on_grid

    if not healthy:
        raise ValueError("references 'healthy' need healthy subjects in the train split")
    return load_on_grid(config, *_on_grid_args(storage, healthy))


def run_attribution(job_id: int) -> None:
    from attrivue_core.configs import AttributionConfig
    from attrivue_core.io import save_nifti
    from backend.services.attributions import channel_map_path, uncertainty_path
    from worker.ml.attribution.captum_eval import attribute_subject
    from worker.ml.imported import load_run_model
    from worker.ml.training import TrainingCancelled, cancel_checks

    storage = get_storage()
    with session_scope() as session:
        row = session.query(AttributionMap).filter(AttributionMap.job_id == job_id).one_or_none()
        if row is None:
            log.warning("attribute job %s has no attribution row; dropping it", job_id)
            return
        run = session.get(Run, row.run_id)
        subject = session.get(Subject, row.subject_id)
        assert run is not None and subject is not None
        ids = (row.id, run.id)
        image_path = storage.absolute(subject.image_path)
        brain_path = storage.absolute(subject.brain_path) if subject.brain_path else None
        channels = subject_channels(storage, subject)
        params = dict(row.params)
        method = row.method
        region = dict(row.region) if row.region is not None else None
        needs_healthy = (
            params.get("baseline") == "healthy_mean" or params.get("references") == "healthy"
        )
        healthy = _healthy_inputs(session, run) if needs_healthy and region is None else []
    attribution_id, run_id = ids
    with claimed(job_id) as claim:
        if claim is None:
            with session_scope() as session:
                job = session.get(Job, job_id)
                cancelled = job is not None and job.status == JobStatus.cancelled.value
            if cancelled:
                _set(attribution_id, status="cancelled")
            return
        _set(attribution_id, claim, status="running")
        reporter = JobReporter(claim)
        try:
            reporter.report(0.1, "loading the model", force=True)
            device = _device(get_settings().device)
            # best.pt (else last.pt) of a trained run, or the model an imported run brought.
            model, config = load_run_model(storage.checkpoint_dir(run_id), device=device)
            out = storage.map_path(run_id, attribution_id)
            out.parent.mkdir(parents=True, exist_ok=True)
            if region is not None:
                reporter.report(0.3, f"explaining the {region['kind']} region", force=True)
                result = _region_map(model, config, image_path, region, params, device, out)
            else:
                # The stored method and settings, validated as a request's would be.
                settings = AttributionConfig.model_validate({**params, "method": method})
                healthy_mean = references = None
                if settings.baseline == "healthy_mean" and method in _BASELINE_METHODS:
                    reporter.report(0.2, "the mean healthy training image", force=True)
                    healthy_mean = _healthy_mean(storage, run_id, config, healthy)
                if method == "gradient_shap" and settings.references == "healthy":
                    references = _healthy_references(storage, config, healthy)
                reporter.report(0.3, f"computing {method}", force=True)
                progress = None
                if method == "integrated_gradients" and settings.target_delta is not None:
                    progress = _accuracy_progress(reporter, settings)
                with cancel_checks(model, reporter.cancel_requested, what=f"the {method} map"):
                    result = attribute_subject(
                        model,
                        config,
                        image_path,
                        settings,
                        device=device,
                        brain_path=brain_path,
                        healthy_mean=healthy_mean,
                        references=references,
                        channels=channels,
                        progress=progress,
                    )
                if references is not None:
                    result.stats["reference_subjects"] = float(len(references))
                if healthy_mean is not None:
                    result.stats["baseline_subjects"] = float(len(healthy))
            # The uncertainty volumes first, the map last: a stored map has its volumes.
            if getattr(result, "sd", None) is not None:
                save_nifti(uncertainty_path(out, "sd"), result.sd, result.affine)
                save_nifti(uncertainty_path(out, "agreement"), result.agreement, result.affine)
            channel_maps = getattr(result, "channels", None)  # (C, ...): several modalities
            if channel_maps is not None:
                for index, channel in enumerate(channel_maps):
                    save_nifti(channel_map_path(out, index), channel, result.affine)
            save_nifti(out, result.map, result.affine)  # atomic: whole or not at all
        except TrainingCancelled:
            if reporter.lost:
                log.warning("job %s was taken over by another worker; stopped", job_id)
            elif finish_job(
                claim, JobStatus.cancelled, message=f"cancelled while computing {method}"
            ):
                _set(attribution_id, status="cancelled")
            return
        except Exception as exc:
            log.exception("attribution job %s failed", job_id)
            error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
                error = (
                    f"no space to write the map ({os.strerror(exc.errno)}); nothing was stored: "
                    "free disk space in the data directory and compute it again"
                )
            if finish_job(claim, JobStatus.failed, message="failed", error=error):
                _set(attribution_id, status="failed")
            return
        _set(
            attribution_id,
            claim,
            status="succeeded",
            path=storage.relative(out),
            convergence_delta=_finite(result.convergence_delta),
            logit=_finite(result.logit),
            stats={k: _finite(v) for k, v in result.stats.items()},
        )
        if finish_job(claim, JobStatus.succeeded, message="map stored"):
            _send_map_products(attribution_id)


def _send_map_products(attribution_id: int) -> None:
    """Leave the display map and statistics to a CPU worker (the API makes them otherwise)."""
    try:
        queue.send("attrivue.map_products", attribution_id)
    except Exception:  # only a cache is lost: the map itself is stored and the job done
        log.warning("could not queue the products of map %s", attribution_id, exc_info=True)


@shared_task(name="attrivue.attribute", acks_late=True, reject_on_worker_lost=True)
def attribute_task(job_id: int) -> None:
    run_attribution(job_id)
