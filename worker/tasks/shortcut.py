"""The shortcut report and the cohort map of a run, as jobs.

``attrivue.shortcut_report`` (gpu queue: it runs the model): per-site metrics of the split from
the run's stored predictions (an imported run's first report predicts its subjects and stores
them: ``predict_imported``), the counterfactual check (``worker.ml.shortcut``) and the share of
relevance outside the brain mask of each subject's newest map, then the flags
(``attrivue_core.shortcut.shortcut_flags``). ``attrivue.cohort_map`` (cpu queue): the mean and
t-map of a group's maps (``worker.ml.cohort``), stored as NIfTI beside the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from celery import shared_task

from attrivue_core.io import load_nifti, save_nifti
from attrivue_core.shortcut import (
    OUTSIDE_BRAIN_SHARE,
    REGION_AUROC_AFTER,
    REGION_AUROC_BEFORE,
    SITE_AUROC_GAP,
    box_region,
    outside_brain_shares,
    shortcut_flags,
    top_relevance_region,
)
from backend.core.config import get_settings
from backend.core.db import session_scope
from backend.models import CohortMap, JobStatus, Run, RunPrediction, ShortcutReport, Subject
from backend.services.brainmasks import ensure_brain_mask
from backend.services.predictions import auroc, has_predictions, run_predictions, site_metrics
from backend.services.shortcuts import newest_maps
from backend.storage import get_storage
from worker.tasks.common import (
    Claim,
    JobReporter,
    claimed,
    finish_job,
    owns,
    retrying,
    subject_channels,
)

__all__ = ["predict_imported", "run_cohort_map", "run_shortcut_report", "site_table"]

log = logging.getLogger(__name__)


class _Stopped(Exception):
    """The job was cancelled or taken over while it ran."""


def predict_imported(
    run_id: int,
    model: Any,
    config: Any,
    *,
    device: str = "cpu",
    stop: Callable[[], bool] = lambda: False,
    report: Callable[[float, str], None] = lambda fraction, message: None,
) -> int:
    """Predict every subject of an imported run's dataset with its model and store the rows
    (replacing any), as training stores a trained run's; returns how many were stored.

    An imported run has no predictions of its own; a shortcut report needs them (the site
    table and the AUROCs), so its first report makes them."""
    import torch

    from worker.ml.shortcut import subject_logit

    storage = get_storage()
    with session_scope() as session:
        run = session.get(Run, run_id)
        assert run is not None
        subjects = [
            (
                s.id,
                s.subject_key,
                s.split,
                s.site or "",
                int(s.label),
                storage.absolute(s.image_path),
                ensure_brain_mask(session, storage, s),
                subject_channels(storage, s),
            )
            for s in session.query(Subject)
            .filter(Subject.dataset_id == run.dataset_id)
            .order_by(Subject.subject_key)
        ]
    rows = []
    torch_device = torch.device(device)
    for done, (subject_id, key, split, site, label, image, brain, more) in enumerate(subjects):
        if stop():
            raise _Stopped
        logit = subject_logit(model, config, image, brain, torch_device, more)
        rows.append((subject_id, key, split, site, label, logit))
        report(0.02 + 0.06 * (done + 1) / len(subjects), f"predicting {done + 1}/{len(subjects)}")

    def write() -> None:
        with session_scope() as session:
            session.query(RunPrediction).filter(RunPrediction.run_id == run_id).delete()
            for subject_id, key, split, site, label, logit in rows:
                session.add(
                    RunPrediction(
                        run_id=run_id,
                        subject_id=subject_id,
                        subject_key=key,
                        split=split,
                        site=site,
                        label=label,
                        logit=logit,
                        probability=float(torch.sigmoid(torch.tensor(logit))),
                    )
                )

    retrying(write, what=f"storing the predictions of imported run {run_id}")
    return len(rows)


def site_table(rows: list[RunPrediction]) -> list[dict[str, Any]]:
    """``site_metrics`` of one split's rows, each site with the AUROC of the other sites pooled
    (``others_auroc``; None with one class among them, or for the all-sites row)."""
    table = []
    for entry in site_metrics(rows):
        site = entry["site"]
        others = None
        if site is not None:
            rest = [r for r in rows if r.site != site]
            others = auroc([r.label for r in rest], [r.probability for r in rest]) if rest else None
        table.append({**entry, "others_auroc": others})
    return table


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def compute_report(
    run_id: int,
    split: str,
    params: dict[str, Any],
    *,
    device: str = "cpu",
    stop: Callable[[], bool] = lambda: False,
    report: Callable[[float, str], None] = lambda fraction, message: None,
) -> dict[str, Any]:
    """The report's result (without the flags) for a run and split; see the module docstring."""
    from worker.ml.imported import load_run_model
    from worker.ml.shortcut import counterfactual_summary, logits_with_region_erased

    storage = get_storage()
    region_spec = params["region"]
    loaded = None
    with session_scope() as session:
        run = session.get(Run, run_id)
        assert run is not None
        unpredicted = run.source == "imported" and not has_predictions(session, run)
    if unpredicted:
        report(0.02, "predicting the subjects with the imported model")
        # best.pt (else last.pt) of a trained run, or the model an imported run brought.
        loaded = load_run_model(storage.checkpoint_dir(run_id), device=device)
        predict_imported(run_id, *loaded, device=device, stop=stop, report=report)
    with session_scope() as session:
        run = session.get(Run, run_id)
        assert run is not None
        rows = run_predictions(session, run, split=split)
        sites = site_table(rows)
        subject_ids = [r.subject_id for r in rows]
        maps = newest_maps(session, run_id, subject_ids, params.get("method"))
        subjects = []
        for row in rows:
            subject = session.get(Subject, row.subject_id)
            assert subject is not None
            brain = ensure_brain_mask(session, storage, subject)
            attribution = maps.get(subject.id)
            map_path = (
                storage.absolute(attribution.path) if attribution and attribution.path else None
            )
            image = storage.absolute(subject.image_path)
            more = subject_channels(storage, subject)
            subjects.append((row.label, image, brain, map_path, more))

    report(0.05, "relevance outside the brain")
    shares = []
    for _, _, brain_path, map_path, _ in subjects:
        if map_path is not None:
            shares.append(
                outside_brain_shares(load_nifti(map_path)[0], load_nifti(brain_path)[0] > 0)
            )
    outside = None
    if shares:
        outside = {
            "n_maps": len(shares),
            "mean_abs_share": _mean([s["abs"] for s in shares if s["abs"] is not None]),
            "mean_positive_share": _mean(
                [s["positive"] for s in shares if s["positive"] is not None]
            ),
            "mean_volume_share": _mean([s["volume"] for s in shares if s["volume"] is not None]),
        }

    def region_of(map_path: Path | None) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        if region_spec["kind"] == "box":
            return lambda image, affine: box_region(image.shape, affine, region_spec["box_mm"])
        assert map_path is not None
        fraction = float(region_spec.get("fraction", 0.01))
        return lambda image, affine: top_relevance_region(load_nifti(map_path)[0], fraction)

    chosen = [
        (label, image, brain, map_path, more)
        for label, image, brain, map_path, more in subjects
        if region_spec["kind"] == "box" or map_path is not None
    ]
    report(0.1, "loading the model")
    model, config = loaded or load_run_model(storage.checkpoint_dir(run_id), device=device)

    def progress(done: int) -> None:
        if stop():
            raise _Stopped
        report(0.1 + 0.85 * done / max(len(chosen), 1), f"counterfactual: {done}/{len(chosen)}")

    logits = logits_with_region_erased(
        model,
        config,
        [(image, brain, region_of(map_path)) for _, image, brain, map_path, _ in chosen],
        params.get("fill", "mean"),
        device=device,
        progress=progress,
        channels=[more for *_, more in chosen],
    )
    region_name = (
        "box "
        + " to ".join("(" + ", ".join(f"{v:g}" for v in c) + ") mm" for c in region_spec["box_mm"])
        if region_spec["kind"] == "box"
        else f"top {100 * float(region_spec.get('fraction', 0.01)):g}% |relevance| region"
    )
    counterfactual = counterfactual_summary(
        [label for label, *_ in chosen],
        logits,
        region=region_name,
        fill=params.get("fill", "mean"),
    )
    return {
        "sites": [
            {
                k: e[k]
                for k in (
                    "site",
                    "n",
                    "n_pathological",
                    "n_healthy",
                    "auroc",
                    "accuracy",
                    "others_auroc",
                )
            }
            for e in sites
        ],
        "counterfactual": counterfactual,
        "outside_brain": outside,
        "thresholds": {
            "region_auroc_before": REGION_AUROC_BEFORE,
            "region_auroc_after": REGION_AUROC_AFTER,
            "site_auroc_gap": SITE_AUROC_GAP,
            "outside_brain_share": OUTSIDE_BRAIN_SHARE,
        },
    }


def _write(
    model: type[ShortcutReport] | type[CohortMap], row_id: int, claim: Claim, **fields: Any
) -> None:
    def write() -> None:
        with session_scope() as session:
            if not owns(session, claim):
                return
            row = session.get(model, row_id)
            if row is not None:
                for key, value in fields.items():
                    setattr(row, key, value)

    retrying(write, what=f"writing {model.__tablename__} {row_id}")


def run_shortcut_report(job_id: int) -> None:
    """Claim the job, compute the report, store it with its flags."""
    with session_scope() as session:
        row = session.query(ShortcutReport).filter(ShortcutReport.job_id == job_id).one_or_none()
        if row is None:
            log.warning("shortcut job %s has no report row; dropping it", job_id)
            return
        report_id, run_id, split, params = row.id, row.run_id, row.split, dict(row.params)
    with claimed(job_id) as claim:
        if claim is None:
            return
        reporter = JobReporter(claim)
        try:
            settings_device = get_settings().device
            device = "cuda" if settings_device == "cuda" else "cpu"
            if settings_device == "auto":
                import torch

                device = "cuda" if torch.cuda.is_available() else "cpu"
            result = compute_report(
                run_id,
                split,
                params,
                device=device,
                stop=reporter.cancel_requested,
                report=lambda f, m: reporter.report(f, m),
            )
            flags = shortcut_flags(
                site_metrics=result["sites"],
                counterfactual=result["counterfactual"],
                outside_brain=result["outside_brain"],
            )
        except _Stopped:
            if not reporter.lost:
                finish_job(claim, JobStatus.cancelled, message="cancelled")
            return
        except Exception as exc:
            log.exception("shortcut report job %s failed", job_id)
            finish_job(
                claim, JobStatus.failed, message="failed", error=f"{type(exc).__name__}: {exc}"
            )
            return
        _write(ShortcutReport, report_id, claim, result=result, flags=flags)
        message = f"{len(flags)} flag(s) raised" if flags else "no flag raised"
        finish_job(claim, JobStatus.succeeded, message=message)


def run_cohort_map(job_id: int) -> None:
    """Claim the job, compute the group's mean and t-map, store both as NIfTI."""
    from worker.ml.attribution.captum_eval import map_stats
    from worker.ml.cohort import cohort_maps

    storage = get_storage()
    with session_scope() as session:
        row = session.query(CohortMap).filter(CohortMap.job_id == job_id).one_or_none()
        if row is None:
            log.warning("cohort job %s has no cohort row; dropping it", job_id)
            return
        run = session.get(Run, row.run_id)
        assert run is not None
        cohort_id, run_id = row.id, row.run_id
        subject_ids = [
            s.id
            for s in session.query(Subject)
            .filter(
                Subject.dataset_id == run.dataset_id,
                Subject.split == row.split,
                Subject.label == row.label,
            )
            .order_by(Subject.subject_key)
        ]
        maps = newest_maps(session, run_id, subject_ids, row.method)
        ordered = [maps[s] for s in subject_ids if s in maps]
        paths = [storage.absolute(m.path) for m in ordered if m.path]
        attribution_ids = [m.id for m in ordered]
        reference = ordered[0].subject_id if ordered else None
    with claimed(job_id) as claim:
        if claim is None:
            return
        reporter = JobReporter(claim)
        try:
            reporter.report(0.1, f"resampling {len(paths)} maps", force=True)
            result = cohort_maps(paths)
            folder = storage.run_dir(run_id) / "cohort"
            mean_path, t_path = (
                folder / f"{cohort_id}-mean.nii.gz",
                folder / f"{cohort_id}-t.nii.gz",
            )
            folder.mkdir(parents=True, exist_ok=True)
            save_nifti(mean_path, result.mean, result.affine, dtype=np.float32)
            save_nifti(t_path, result.t, result.affine, dtype=np.float32)
        except Exception as exc:
            log.exception("cohort job %s failed", job_id)
            finish_job(
                claim, JobStatus.failed, message="failed", error=f"{type(exc).__name__}: {exc}"
            )
            return
        _write(
            CohortMap,
            cohort_id,
            claim,
            n_subjects=result.n,
            reference_subject_id=reference,
            mean_path=storage.relative(mean_path),
            t_path=storage.relative(t_path),
            stats={
                "mean": map_stats(result.mean),
                "t": map_stats(result.t),
                "attribution_ids": attribution_ids,
                "statistics": "nilearn SecondLevelModel, intercept-only design, no smoothing",
            },
        )
        finish_job(claim, JobStatus.succeeded, message=f"cohort of {result.n} maps stored")


@shared_task(name="attrivue.shortcut_report", acks_late=True, reject_on_worker_lost=True)
def shortcut_report_task(job_id: int) -> None:
    run_shortcut_report(job_id)


@shared_task(name="attrivue.cohort_map", acks_late=True, reject_on_worker_lost=True)
def cohort_map_task(job_id: int) -> None:
    run_cohort_map(job_id)
