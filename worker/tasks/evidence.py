"""The evidence task: sanity checks and faithfulness of one map (worker.ml.evidence).

The checks run on the working grid, where the model sees the image: the map is computed again
there with the stored method and settings (the stored map is the same one brought to the
subject's grid), then compared with the maps of randomised models, and scored by deletion,
insertion, infidelity and IROF. The numbers, curves and verdict go to the ``evidence_checks`` row.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from celery import shared_task

from backend.core.config import get_settings
from backend.core.db import session_scope
from backend.models import AttributionMap, EvidenceCheck, Job, JobStatus, Run, Subject
from backend.storage import get_storage
from worker.tasks.common import (
    Claim,
    JobReporter,
    claimed,
    finish_job,
    set_fields,
    subject_channels,
)
from worker.tasks.train import run_samples

log = logging.getLogger(__name__)

# Why an imported run gets no data randomisation (the API refuses it before queueing).
IMPORTED_DATA_RANDOMISATION = (
    "data randomisation trains the run's network again on permuted labels; an imported "
    "run's network was not built here and cannot be retrained"
)


def _set(check_id: int, claim: Claim | None = None, **fields: object) -> None:
    """Write the check's row, unless ``claim`` is given and no longer holds the job."""
    set_fields(EvidenceCheck, check_id, claim, what=f"writing evidence check {check_id}", **fields)


def json_safe(value: Any) -> Any:
    """Results as JSON can hold them: NaN and infinities become null."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _run_checks(reporter: JobReporter, spec: dict[str, Any]) -> dict[str, Any]:
    """Compute every requested check; returns ``results`` keyed by check kind."""
    import numpy as np
    import torch

    from attrivue_core.configs import AttributionConfig
    from worker.ml.attribution.captum_eval import attribute_batch
    from worker.ml.evidence import cascading_randomisation, data_randomisation, faithfulness
    from worker.ml.imported import load_run_model
    from worker.ml.nets import pathological_logit
    from worker.ml.training import cancel_checks, select_device
    from worker.ml.transforms import BRAIN_KEY, IMAGE_KEY, preprocess_for, subject_item

    storage = get_storage()
    device = select_device(get_settings().device)
    if spec["imported"] and "data_randomisation" in spec["checks"]:
        raise ValueError(IMPORTED_DATA_RANDOMISATION)
    # best.pt (else last.pt) of a trained run, or the model an imported run brought.
    model, config = load_run_model(storage.checkpoint_dir(spec["run_id"]), device=device)
    # Every channel of a multi-modal subject, preprocessed as in training (subject_on_grid's
    # item; the brain mask on the grid is kept too).
    prepared = preprocess_for(config)(subject_item(spec["image"], spec["channels"], spec["brain"]))
    x = prepared[IMAGE_KEY].as_tensor()[None].float()  # (1, C, *grid)
    brain = prepared.get(BRAIN_KEY)
    brain_mask = None
    if brain is not None and tuple(brain.shape[1:]) == tuple(x.shape[2:]):
        brain_mask = np.asarray(brain)[0] > 0.5
    settings = AttributionConfig.model_validate({**spec["params"], "method": spec["method"]})

    def channel_maps(network: torch.nn.Module) -> np.ndarray:
        """The map of each channel on the working grid, ``(C, *grid)``."""
        maps, _ = attribute_batch(network, x, settings, device=device)
        return maps[0]

    def attribute(network: torch.nn.Module) -> np.ndarray:
        """The map (the sum of the channels' maps, as stored), what randomisation compares."""
        return channel_maps(network).sum(axis=0)

    results: dict[str, Any] = {}
    with cancel_checks(model, reporter.cancel_requested, what="the evidence checks"):
        reporter.report(0.05, f"computing the {spec['method']} map on the working grid", force=True)
        per_channel = channel_maps(model)
        reference = per_channel.sum(axis=0)
        if "faithfulness" in spec["checks"]:
            reporter.report(0.1, "deletion, insertion, infidelity and IROF", force=True)

            def forward(batch: torch.Tensor) -> torch.Tensor:
                return pathological_logit(model(batch.to(device)))

            results["faithfulness"] = faithfulness(
                forward,
                x[0].to(device),
                per_channel,
                steps=spec["curve_steps"],
                brain_mask=brain_mask,
            )
        if "model_randomisation" in spec["checks"]:

            def step(done: int, total: int) -> None:
                reporter.report(
                    0.3 + 0.4 * done / total, f"randomised {done} of {total} layers", force=True
                )

            results["model_randomisation"] = cascading_randomisation(
                model, attribute, reference=reference, brain_mask=brain_mask, progress=step
            )
        if "data_randomisation" in spec["checks"]:
            reporter.report(0.75, "training on permuted labels", force=True)
            # The checkpoint's config (not the stored one) is what the model was trained with.
            _, samples = run_samples(spec["run_id"])
            with tempfile.TemporaryDirectory(dir=storage.root) as scratch:
                results["data_randomisation"] = data_randomisation(
                    config,
                    samples,
                    attribute,
                    reference,
                    checkpoint_dir=Path(scratch),
                    epochs=spec["data_epochs"],
                    brain_mask=brain_mask,
                    should_stop=reporter.cancel_requested,
                )
    return results


def run_evidence(job_id: int) -> None:
    """Run the checks of the evidence row whose job is ``job_id``, and store them."""
    from worker.ml.training import TrainingCancelled

    storage = get_storage()
    with session_scope() as session:
        row = session.query(EvidenceCheck).filter(EvidenceCheck.job_id == job_id).one_or_none()
        if row is None:
            log.warning("evidence job %s has no evidence row; dropping it", job_id)
            return
        attribution = session.get(AttributionMap, row.attribution_id)
        assert attribution is not None
        subject = session.get(Subject, attribution.subject_id)
        assert subject is not None
        settings = dict(row.results.get("settings", {}))
        run = session.get(Run, row.run_id)
        spec: dict[str, Any] = {
            "run_id": row.run_id,
            "imported": run is not None and run.source == "imported",
            "method": attribution.method,
            "params": dict(attribution.params),
            "image": storage.absolute(subject.image_path),
            "brain": storage.absolute(subject.brain_path) if subject.brain_path else None,
            "channels": subject_channels(storage, subject),
            "checks": list(row.checks),
            "data_epochs": int(settings.get("data_epochs", 2)),
            "curve_steps": int(settings.get("curve_steps", 20)),
        }
        check_id = row.id
    with claimed(job_id) as claim:
        if claim is None:
            with session_scope() as session:
                job = session.get(Job, job_id)
                cancelled = job is not None and job.status == JobStatus.cancelled.value
            if cancelled:
                _set(check_id, status="cancelled")
            return
        _set(check_id, claim, status="running")
        reporter = JobReporter(claim)
        try:
            results = _run_checks(reporter, spec)
        except TrainingCancelled:
            if reporter.lost:
                log.warning("job %s was taken over by another worker; stopped", job_id)
            elif finish_job(claim, JobStatus.cancelled, message="cancelled during the checks"):
                _set(check_id, status="cancelled")
            return
        except Exception as exc:
            log.exception("evidence job %s failed", job_id)
            error = f"{type(exc).__name__}: {exc}"
            if finish_job(claim, JobStatus.failed, message="failed", error=error):
                _set(check_id, status="failed", error=error)
            return
        failed = [r["reason"] for r in results.values() if not r["passes"]]
        reasons = failed or [r["reason"] for r in results.values()]
        _set(
            check_id,
            claim,
            status="succeeded",
            results=json_safe({**results, "settings": settings}),
            verdict="fails" if failed else "passes",
            reasons=reasons,
        )
        finish_job(claim, JobStatus.succeeded, message="checks stored")


@shared_task(name="attrivue.evidence", acks_late=True, reject_on_worker_lost=True)
def evidence_task(job_id: int) -> None:
    run_evidence(job_id)
