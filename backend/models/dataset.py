"""Datasets and their subjects (one MR image or several modalities, an optional lesion mask, a brain mask, a label)."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.models.base import Base, CreatedAt


class Dataset(CreatedAt, Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # Free-text NIfTI header fields are cleared on every upload; recorded for provenance.
    deidentified: Mapped[bool] = mapped_column(Boolean, default=True)
    # What the subjects' continuous ``target`` is (e.g. "EDSS"), for regression runs.
    target_name: Mapped[str] = mapped_column(String(100), default="", server_default="")
    # The channel order of a multi-modal dataset (e.g. ["t1", "flair"]): fixed by its first
    # import that names several modalities; channel 0 is each subject's ``image_path``.
    # NULL: one image per subject.
    modalities: Mapped[list[str] | None] = mapped_column(JSON, default=None)

    subjects: Mapped[list[Subject]] = relationship(
        back_populates="dataset", cascade="all, delete-orphan", order_by="Subject.id"
    )


class Subject(CreatedAt, Base):
    __tablename__ = "subjects"
    __table_args__ = (UniqueConstraint("dataset_id", "subject_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    subject_key: Mapped[str] = mapped_column(String(128))
    label: Mapped[int] = mapped_column(Integer)  # 0 healthy, 1 pathological
    split: Mapped[str] = mapped_column(String(8), default="train")
    site: Mapped[str] = mapped_column(String(64), default="")
    target: Mapped[float | None] = mapped_column(Float)
    image_path: Mapped[str] = mapped_column(String(512))
    mask_path: Mapped[str | None] = mapped_column(String(512))
    # The brain mask (uint8 0/1 on the image grid): the user's own, or computed at import
    # (attrivue_core.brainmask); NULL for subjects imported before it existed, until first used.
    brain_path: Mapped[str | None] = mapped_column(String(512), default=None)
    # Whether ``brain_path`` holds the user's mask ("given") or a computed one ("computed").
    brain_source: Mapped[str | None] = mapped_column(String(16), default=None)
    # The images of channels 1.. of a multi-modal dataset: modality name -> stored path, on
    # the grid of ``image_path`` (checked, or resampled to it, at import). NULL: one image.
    channel_paths: Mapped[dict[str, str] | None] = mapped_column(JSON, default=None)
    shape: Mapped[list[int]] = mapped_column(JSON)
    affine: Mapped[list[list[float]]] = mapped_column(JSON)

    dataset: Mapped[Dataset] = relationship(back_populates="subjects")
