"""Training runs and their metric time series."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.models.base import Base, CreatedAt
from backend.models.job import Job


class Run(CreatedAt, Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # Launched "from reviews": trained on this earlier run's targets merged with the
    # clinicians' corrections (backend.models.corrections.CorrectedTarget).
    from_reviews_of: Mapped[int | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), default=None
    )

    # The named preset (attrivue_core.presets) whose values the config started from, if any.
    preset: Mapped[str | None] = mapped_column(String(64), default=None)
    # The epoch whose weights are in best.pt and the validation metric that chose it (the
    # early-stopping metric, or the classification metric it fell back to); set at the end.
    best_epoch: Mapped[int | None] = mapped_column(Integer, default=None)
    best_metric: Mapped[str | None] = mapped_column(String(64), default=None)
    # "trained" here, or "imported": a model brought along (attrivue_core.imported), whose
    # files are in the checkpoint folder's imported/ and whose config holds the spec's grid,
    # intensity and brain handling.
    source: Mapped[str] = mapped_column(String(16), default="trained", server_default="trained")
    # Imported runs: "torchscript" or "monai_bundle", and the input spec (ModelInputSpec).
    model_format: Mapped[str | None] = mapped_column(String(16), default=None)
    input_spec: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)

    job: Mapped[Job | None] = relationship(foreign_keys=[job_id])


class RunMetric(Base):
    __tablename__ = "run_metrics"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    step: Mapped[int | None] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)


class RunPrediction(Base):
    """The best weights' prediction for one subject of a finished run (every split)."""

    __tablename__ = "run_predictions"
    __table_args__ = (UniqueConstraint("run_id", "subject_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"))
    # Copied from the subject when the run ended: what the run was trained and scored with.
    subject_key: Mapped[str] = mapped_column(String(128))
    split: Mapped[str] = mapped_column(String(8))
    site: Mapped[str] = mapped_column(String(64), default="")
    label: Mapped[int] = mapped_column(Integer)
    # Pathological logit and sigmoid(logit).
    logit: Mapped[float] = mapped_column(Float)
    probability: Mapped[float] = mapped_column(Float)
