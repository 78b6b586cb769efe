"""Chunked uploads and dataset imports (manifest, zip, BIDS)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from backend.schemas.common import ORMModel
from backend.schemas.dataset import SubjectPublic

UploadStatus = Literal["open", "complete"]


class UploadCreate(BaseModel):
    project_id: int
    # The file's name; a relative path (a folder upload's webkitRelativePath) is kept as is.
    filename: str = Field(min_length=1, max_length=512)
    size: int = Field(gt=0, description="the file's size in bytes")


class UploadPublic(ORMModel):
    id: str
    project_id: int
    filename: str
    size: int
    received: int = Field(description="bytes stored so far: the next chunk starts here")
    status: UploadStatus
    created_at: datetime
    updated_at: datetime


class UploadsPublic(BaseModel):
    data: list[UploadPublic]
    count: int


class ImportFromUploads(BaseModel):
    """An import whose files were sent before as chunked uploads (JSON body)."""

    upload_ids: list[str] = Field(min_length=1, max_length=10000)
    # Only for a BIDS folder whose subjects have both: which image to take.
    modality: Literal["T1w", "FLAIR"] | None = None
    # BIDS: several modalities stacked as channels, in this order (channel 0 first).
    modalities: list[Literal["T1w", "FLAIR"]] | None = Field(default=None, max_length=2)
    # Resample a modality that is off the grid of channel 0 onto it, instead of refusing.
    resample: bool = False
    # Store the subjects whose rows pass and report the others (in ``rejected``); problems
    # not tied to a row still refuse the whole import.
    skip_invalid: bool = False


class ImportProblem(BaseModel):
    """One thing wrong with an import; ``row`` is the line number in the manifest or
    participants.tsv (the header is line 1)."""

    file: str | None = None
    row: int | None = None
    problem: str


class ImportPublic(BaseModel):
    dataset_id: int
    layout: Literal["manifest", "bids"]
    data: list[SubjectPublic]
    count: int
    # With skip_invalid: what was wrong with the rows that were left out.
    rejected: list[ImportProblem] = Field(default_factory=list)


class ImportErrors(BaseModel):
    """The answer to a refused import: nothing was stored."""

    detail: str
    errors: list[ImportProblem]
