from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from backend.schemas.common import ORMModel

Split = Literal["train", "val", "test"]


class DatasetCreate(BaseModel):
    # The project it belongs to; default: the only project where the user may upload.
    project_id: int | None = None
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    target_name: str = Field(
        default="",
        max_length=100,
        description="What the subjects' continuous target is (e.g. EDSS), for regression runs.",
    )


class DatasetUpdate(BaseModel):
    """Fields of a dataset that may change; the ones left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    target_name: str | None = Field(default=None, max_length=100)


class DatasetPublic(ORMModel):
    id: int
    project_id: int
    name: str
    description: str
    created_at: datetime
    deidentified: bool
    target_name: str = ""
    # The channel order of a multi-modal dataset (channel 0 first); null: one image each.
    modalities: list[str] | None = None
    subject_count: int = 0


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int


class SubjectPublic(ORMModel):
    id: int
    dataset_id: int
    subject_key: str
    label: int
    split: Split
    site: str
    target: float | None
    has_mask: bool
    # The subject's brain mask (GET /subjects/{id}/brain.nii.gz): "given" (the user's own),
    # "computed" (from the image, at import), or null (imported before brain masks existed:
    # computed the first time it is needed).
    brain_mask: Literal["given", "computed"] | None = None
    # The subject's modalities in channel order (GET /subjects/{id}/channels/{index}.nii.gz);
    # empty: one image.
    channels: list[str] = []
    shape: list[int]
    created_at: datetime


class SubjectUpdate(BaseModel):
    """Fields of a subject that may change after upload; the ones left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    label: Literal[0, 1] | None = Field(default=None, description="0 healthy, 1 pathological")
    split: Split | None = None
    site: str | None = Field(
        default=None,
        max_length=64,
        description="acquisition site or scanner; surrounding spaces are dropped, '' clears it",
    )
    target: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="Continuous target of regression runs; null removes it.",
    )

    @field_validator("site")
    @classmethod
    def _site_text(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("site may not contain control characters (tabs, line breaks)")
        return value.strip()


class SubjectsPublic(BaseModel):
    data: list[SubjectPublic]
    count: int
