"""Target maps merged from reviews' corrections, and attribution maps stored after each epoch."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.models.base import Base, CreatedAt


class CorrectedTarget(CreatedAt, Base):
    """The target map of one subject for a run launched from the reviews of an earlier run.

    ``path`` is a uint8 NIfTI on the subject's grid (0, 1, 255 = unconstrained; see
    ``attrivue_core.corrections``); ``provenance`` lists the merged reviews (reviewer, map, review,
    voxels decided); ``stats`` the counts of the merge; ``metrics`` the lesion metrics of both
    runs on this subject, written by the worker when the corrected run has trained.
    """

    __tablename__ = "corrected_targets"
    __table_args__ = (UniqueConstraint("run_id", "subject_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    source_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), index=True
    )
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(512))
    policy: Mapped[str] = mapped_column(String(32))
    provenance: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class EpochMap(CreatedAt, Base):
    """A watch subject's attribution map after one epoch, reduced (int16 on the working grid)."""

    __tablename__ = "epoch_maps"
    __table_args__ = (UniqueConstraint("run_id", "subject_id", "epoch"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(512))
    scale: Mapped[float] = mapped_column(Float)  # attribution per int16 unit
    shape: Mapped[list[int]] = mapped_column(JSON)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
