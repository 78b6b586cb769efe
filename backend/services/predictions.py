"""A finished run's per-subject predictions and the metrics per site computed from them.

The training task stores one row per subject (``RunPrediction``: the best weights' logit and
probability, with the subject's split, site and label at training time). Per-site metrics
are computed here from those rows, so they always agree with the predictions served.
numpy only: the backend never imports torch or scikit-learn.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.models import JobStatus, Run, RunPrediction
from backend.services.errors import Conflict, NotFound

__all__ = [
    "CSV_COLUMNS",
    "THRESHOLD",
    "auroc",
    "has_predictions",
    "predictions_csv",
    "run_predictions",
    "site_metrics",
]

THRESHOLD = 0.5  # a probability at or above it calls the subject pathological
CSV_COLUMNS = (
    "subject_id",
    "subject_key",
    "split",
    "site",
    "label",
    "logit",
    "probability",
)
_SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


def has_predictions(session: Session, run: Run) -> bool:
    """Whether any per-subject prediction of the run is stored."""
    query = select(RunPrediction.id).where(RunPrediction.run_id == run.id).limit(1)
    return session.scalars(query).first() is not None


def run_predictions(session: Session, run: Run, *, split: str | None = None) -> list[RunPrediction]:
    """The run's rows (of one split, when given), by split then subject key.

    Raises:
        Conflict: The run has not succeeded (yet): its predictions are written at the end.
        NotFound: The run succeeded without predictions (a regression or segmentation run,
            or one trained before predictions were recorded).
    """
    if run.status != JobStatus.succeeded.value:
        raise Conflict(
            f"run {run.id} is {run.status}: its per-subject predictions are written when it "
            "succeeds"
        )
    rows = list(session.scalars(select(RunPrediction).where(RunPrediction.run_id == run.id)))
    if not rows:
        task = run.config.get("task", "classification")
        if task != "classification":
            why = f"it is a {task} run (predictions are recorded for classification runs)"
        elif run.source == "imported":
            why = (
                "it was imported; its first shortcut report predicts every subject and "
                f"stores the predictions (POST /runs/{run.id}/shortcut-reports)"
            )
        else:
            why = "it was trained before per-subject predictions were recorded; retrain it"
        raise NotFound(f"run {run.id} has no per-subject predictions: {why}")
    rows.sort(key=lambda r: (_SPLIT_ORDER.get(r.split, 3), r.subject_key))
    return [r for r in rows if split is None or r.split == split]


def predictions_csv(rows: Sequence[RunPrediction]) -> str:
    """The rows as CSV text with the header ``CSV_COLUMNS``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(
            [
                r.subject_id,
                r.subject_key,
                r.split,
                r.site,
                r.label,
                repr(r.logit),
                repr(r.probability),
            ]
        )
    return out.getvalue()


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """AUROC of ``scores`` for ``labels`` == 1 (Mann-Whitney U with mid-ranks for ties);
    ``None`` with one class only."""
    truth = np.asarray(labels, dtype=bool)
    values = np.asarray(scores, dtype=np.float64)
    n_pos = int(truth.sum())
    n_neg = truth.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mid_ranks = (ends - counts + 1 + ends) / 2.0
    rank_sum = mid_ranks[inverse.ravel()][truth].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def site_metrics(rows: Sequence[RunPrediction]) -> list[dict[str, object]]:
    """Metrics per split and site, and per split over all sites (``site`` None).

    Each entry: ``split``, ``site`` ('' for subjects without one), ``n``,
    ``n_pathological``, ``n_healthy``, ``auroc`` (None with one class), ``accuracy`` (at
    ``THRESHOLD``), ``mean_probability``.
    """
    groups: dict[tuple[str, str | None], list[RunPrediction]] = defaultdict(list)
    for r in rows:
        groups[(r.split, r.site)].append(r)
        groups[(r.split, None)].append(r)
    out: list[dict[str, object]] = []
    for (split, site), members in sorted(
        groups.items(),
        key=lambda kv: (_SPLIT_ORDER.get(kv[0][0], 3), kv[0][1] is not None, kv[0][1] or ""),
    ):
        labels = [m.label for m in members]
        probabilities = [m.probability for m in members]
        called = [p >= THRESHOLD for p in probabilities]
        out.append(
            {
                "split": split,
                "site": site,
                "n": len(members),
                "n_pathological": sum(labels),
                "n_healthy": len(labels) - sum(labels),
                "auroc": auroc(labels, probabilities),
                "accuracy": float(
                    np.mean([c == bool(y) for c, y in zip(called, labels, strict=True)])
                ),
                "mean_probability": float(np.mean(probabilities)),
            }
        )
    return out
