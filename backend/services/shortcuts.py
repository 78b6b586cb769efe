"""Shortcut reports and cohort maps: check the request, store the row, queue the job.

The worker fills the rows in (``worker.tasks.shortcut``); their status is their job's. A
request that cannot be carried out (a run without predictions, too few maps) is refused here
with a 4xx error and nothing is stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.models import AttributionMap, CohortMap, Run, ShortcutReport, Subject, User
from backend.services import jobs as job_svc
from backend.services.errors import Conflict, NotFound
from backend.services.predictions import has_predictions, run_predictions
from backend.storage import Storage

__all__ = [
    "COHORT_KIND",
    "REPORT_KIND",
    "cohort_file",
    "cohort_maps_of",
    "create_cohort_map",
    "create_report",
    "get_cohort_map",
    "get_report",
    "newest_maps",
    "reports_of",
]

REPORT_KIND = "shortcut_report"
COHORT_KIND = "cohort_map"


def newest_maps(
    session: Session, run_id: int, subject_ids: list[int], method: str | None
) -> dict[int, AttributionMap]:
    """Each subject's newest succeeded whole-image map of the run (of ``method`` when given)."""
    query = select(AttributionMap).where(
        AttributionMap.run_id == run_id,
        AttributionMap.subject_id.in_(subject_ids),
        AttributionMap.status == "succeeded",
        AttributionMap.path.is_not(None),
    )
    if method is not None:
        query = query.where(AttributionMap.method == method)
    newest: dict[int, AttributionMap] = {}
    for row in session.scalars(query.order_by(AttributionMap.id)):
        if row.region is None:  # a JSON column: SQL NULL and JSON null both read as None
            newest[row.subject_id] = row
    return newest


def create_report(
    session: Session, run: Run, *, split: str, params: dict[str, Any], user: User
) -> ShortcutReport:
    """Store a report row and its job (the caller commits, then dispatches the job).

    An imported run has no predictions until its first report: the report's job predicts
    every subject of its dataset with the imported model and stores them first.

    Raises:
        Conflict: The run has not succeeded, or the top-relevance region was asked for and no
            subject of the split has a map.
        NotFound: The run has no per-subject predictions (not a classification run: an
            imported regression run has none either).
    """
    # An imported classifier is predicted by its first report's job; any other run (a
    # regression run, imported or trained, among them) needs its stored predictions, which
    # ``run_predictions`` refuses to find for a regression run before anything is queued.
    classifier = run.config.get("task", "classification") == "classification"
    if run.source == "imported" and classifier and not has_predictions(session, run):
        subject_ids = list(
            session.scalars(
                select(Subject.id).where(
                    Subject.dataset_id == run.dataset_id, Subject.split == split
                )
            )
        )
    else:
        subject_ids = [r.subject_id for r in run_predictions(session, run, split=split)]
    if not subject_ids:
        raise Conflict(f"run {run.id} has no subjects in the {split} split")
    region = params.get("region", {})
    if region.get("kind") == "top_relevance":
        maps = newest_maps(session, run.id, subject_ids, params.get("method"))
        if not maps:
            which = f"{params['method']} maps" if params.get("method") else "maps"
            raise Conflict(
                f"the top-relevance region needs {which} of the {split} split: run {run.id} has "
                "none yet; compute them first (POST /attributions/batch) or draw a box"
            )
    job = job_svc.new_job(session, kind=REPORT_KIND, user=user)
    report = ShortcutReport(
        run_id=run.id, split=split, params=params, flags=[], job_id=job.id, created_by_id=user.id
    )
    session.add(report)
    session.flush()
    return report


def _group_subject_ids(session: Session, run: Run, split: str, label: int) -> list[int]:
    return list(
        session.scalars(
            select(Subject.id)
            .where(Subject.dataset_id == run.dataset_id, Subject.split == split)
            .where(Subject.label == label)
            .order_by(Subject.subject_key)
        )
    )


def create_cohort_map(
    session: Session, run: Run, *, split: str, label: int, method: str, user: User
) -> CohortMap:
    """Store a cohort row and its job (the caller commits, then dispatches the job).

    Raises:
        Conflict: The run has not succeeded, or fewer than two subjects of the group have a
            succeeded ``method`` map of the run.
    """
    if run.status != "succeeded":
        raise Conflict(f"run {run.id} is {run.status}: a cohort map needs a finished run")
    subject_ids = _group_subject_ids(session, run, split, label)
    maps = newest_maps(session, run.id, subject_ids, method)
    if len(maps) < 2:
        raise Conflict(
            f"a cohort map needs {method} maps of at least two subjects with label {label} in "
            f"the {split} split; run {run.id} has {len(maps)} of {len(subject_ids)}: compute "
            "them first (POST /attributions/batch)"
        )
    job = job_svc.new_job(session, kind=COHORT_KIND, user=user)
    cohort = CohortMap(
        run_id=run.id,
        split=split,
        label=label,
        method=method,
        n_subjects=0,
        stats={},
        job_id=job.id,
        created_by_id=user.id,
    )
    session.add(cohort)
    session.flush()
    return cohort


def get_report(session: Session, run: Run, report_id: int) -> ShortcutReport:
    report = session.get(ShortcutReport, report_id)
    if report is None or report.run_id != run.id:
        raise NotFound(f"shortcut report {report_id} of run {run.id} not found")
    return report


def reports_of(session: Session, run: Run) -> list[ShortcutReport]:
    """The run's reports, newest first."""
    query = select(ShortcutReport).where(ShortcutReport.run_id == run.id)
    return list(session.scalars(query.order_by(ShortcutReport.id.desc())))


def get_cohort_map(session: Session, run: Run, cohort_id: int) -> CohortMap:
    cohort = session.get(CohortMap, cohort_id)
    if cohort is None or cohort.run_id != run.id:
        raise NotFound(f"cohort map {cohort_id} of run {run.id} not found")
    return cohort


def cohort_maps_of(session: Session, run: Run) -> list[CohortMap]:
    """The run's cohort maps, newest first."""
    query = select(CohortMap).where(CohortMap.run_id == run.id)
    return list(session.scalars(query.order_by(CohortMap.id.desc())))


def cohort_file(storage: Storage, cohort: CohortMap, which: str) -> Path:
    """The stored mean or t-map of a finished cohort map.

    Raises:
        Conflict: The job has not stored it (yet).
        NotFound: The file is gone.
    """
    stored = cohort.mean_path if which == "mean" else cohort.t_path
    if stored is None:
        status = cohort.job.status if cohort.job is not None else "unknown"
        raise Conflict(f"cohort map {cohort.id} is {status}: its {which} map is not stored")
    path = storage.absolute(stored)
    if not path.is_file():
        raise NotFound(f"the {which} map of cohort map {cohort.id} is missing from storage")
    return path
