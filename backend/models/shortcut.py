"""Shortcut reports and cohort maps of a run: evidence that a site or a region drives its decision.

Both are computed by a job (``Job.kind`` "shortcut_report" or "cohort_map"); the row is written
when the job is queued and filled in by the worker. Their status is the job's.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.models.base import Base, CreatedAt
from backend.models.job import Job


class ShortcutReport(CreatedAt, Base):
    """Per-site metrics, the counterfactual check and the relevance outside the brain."""

    __tablename__ = "shortcut_reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    split: Mapped[str] = mapped_column(String(8))
    # The counterfactual's region and fill (backend.schemas.shortcut.CounterfactualSpec as JSON).
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Filled in by the worker: site metrics, counterfactual, relevance outside the brain.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=None)
    # The raised flags, each {"kind", "reason", ...numbers}; empty when nothing was raised.
    flags: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    job: Mapped[Job | None] = relationship(foreign_keys=[job_id])


class CohortMap(CreatedAt, Base):
    """The mean signed map and the voxel-wise one-sample t-map of a run's maps over a group."""

    __tablename__ = "cohort_maps"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    split: Mapped[str] = mapped_column(String(8))
    label: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(64))
    # The subject whose grid the maps were resampled to (its image is the viewer's background).
    reference_subject_id: Mapped[int | None] = mapped_column(
        ForeignKey("subjects.id", ondelete="SET NULL")
    )
    n_subjects: Mapped[int] = mapped_column(Integer, default=0)
    mean_path: Mapped[str | None] = mapped_column(String(512), default=None)
    t_path: Mapped[str | None] = mapped_column(String(512), default=None)
    # {"mean": map_stats, "t": map_stats, "attribution_ids": [...], "statistics": "..."}
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    job: Mapped[Job | None] = relationship(foreign_keys=[job_id])
