"""Evidence checks of one attribution map: sanity checks and faithfulness (a job each)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from backend.models.base import Base, CreatedAt


class EvidenceCheck(CreatedAt, Base):
    """The checks asked for one map, their numbers and curves, and the verdict.

    ``checks`` lists the kinds run (``model_randomisation``, ``data_randomisation``,
    ``faithfulness``); ``results`` holds one object per kind (the numbers per step, the
    curves, and that check's ``passes`` and ``reason``); ``verdict`` is ``passes`` when every
    check passed, ``fails`` otherwise, and null until the job has finished.
    """

    __tablename__ = "evidence_checks"

    id: Mapped[int] = mapped_column(primary_key=True)
    attribution_id: Mapped[int] = mapped_column(
        ForeignKey("attribution_maps.id", ondelete="CASCADE"), index=True
    )
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    checks: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    results: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    verdict: Mapped[str | None] = mapped_column(String(8))
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
