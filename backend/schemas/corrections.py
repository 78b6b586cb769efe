"""Runs from reviews (corrected target maps) and epoch maps of watch subjects."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from backend.schemas.common import ORMModel
from backend.schemas.configs import RunConfigBody

PolicyName = Literal["abstain", "missed_wins", "latest"]


class FromReviewsCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    config: RunConfigBody = Field(
        default_factory=dict,
        description="Overrides of the earlier run's config (validated as RunConfig). "
        "watch_subjects defaults to the corrected subjects.",
    )
    policy: PolicyName = Field(
        default="abstain",
        description="Precedence between reviewers who disagree on a voxel: 'abstain' leaves "
        "it unconstrained, 'missed_wins' sets it to lesion, 'latest' takes the latest review. "
        "Within one reviewer the later review always replaces the earlier one.",
    )


class ReviewCorrection(BaseModel):
    review_id: int
    reviewer_id: int
    reviewer: str
    attribution_id: int
    method: str
    created_at: datetime
    missed_voxels: int
    spurious_voxels: int


class SubjectCorrections(BaseModel):
    subject_id: int
    subject_key: str
    split: str
    label: int
    reviews: list[ReviewCorrection]


class RunCorrections(BaseModel):
    """The drawn corrections on maps of one run, by subject."""

    run_id: int
    n_reviews: int
    subjects: list[SubjectCorrections]


class CorrectedTargetPublic(ORMModel):
    id: int
    run_id: int
    source_run_id: int | None
    subject_id: int
    subject_key: str = ""
    split: str = ""
    policy: str
    provenance: list[dict[str, Any]] = Field(
        description="One entry per merged review: review_id, reviewer_id, reviewer, "
        "attribution_id, method, created_at, missed_voxels, spurious_voxels, decided_voxels"
    )
    stats: dict[str, Any]
    metrics: dict[str, Any] = Field(
        description="'before' (earlier run) and 'after' (this run): lesion_mass, dice_top5, "
        "pointing_game of IG maps (8 points, working grid) of the best weights"
    )
    created_at: datetime


class CorrectedTargetsPublic(BaseModel):
    run_id: int
    from_reviews_of: int | None
    data: list[CorrectedTargetPublic]


class EpochMapPublic(ORMModel):
    id: int
    subject_id: int
    epoch: int
    method: str
    scale: float
    shape: list[int]
    stats: dict[str, Any]


class EpochMapsPublic(BaseModel):
    run_id: int
    watch_subjects: list[int]
    data: list[EpochMapPublic]
