from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from backend.schemas.common import ORMModel


class ReviewCreate(BaseModel):
    attribution_id: int
    rating: int = Field(ge=1, le=5, description="does the pathological relevance lie on lesions")
    trust: bool = Field(description="would you trust the decision")
    comment: str = Field(default="", max_length=5000)


class ReviewPublic(ORMModel):
    id: int
    attribution_id: int
    reviewer_id: int
    rating: int
    trust: bool
    comment: str
    created_at: datetime
    has_correction: bool = False


class ReviewsPublic(BaseModel):
    data: list[ReviewPublic]
    count: int


class ReviewQueueItem(BaseModel):
    """One map the current user has not reviewed yet.

    In blinded mode ``run_id``, ``run_name`` and ``method`` are null and ``label`` is an opaque
    name that stays the same for this user across reloads.
    """

    attribution_id: int
    subject_id: int
    label: str
    run_id: int | None
    run_name: str | None
    method: str | None


class ReviewQueue(BaseModel):
    project_id: int
    blinded: bool
    data: list[ReviewQueueItem]
    count: int
    reviewed: int = Field(description="maps of the project this user has already reviewed")


class RaterPair(BaseModel):
    rater_a: str
    rater_b: str
    n_maps: int = Field(description="maps both raters reviewed")
    kappa: float | None = Field(
        description="Cohen's kappa, quadratic weights over ratings 1-5; null when undefined"
    )
    trust_agreement: float | None = Field(description="fraction of shared maps with equal trust")


class Agreement(BaseModel):
    project_id: int | None
    run_id: int | None
    n_maps: int = Field(description="maps rated by at least two raters")
    n_reviews: int = Field(description="reviews of those maps (a rater's latest per map)")
    n_raters: int
    pairs: list[RaterPair]
    mean_kappa: float | None
    trust_agreement: float | None = Field(
        description="fraction of (map, rater pair) comparisons with equal trust"
    )
