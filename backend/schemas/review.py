from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, model_validator

from backend.schemas.common import ORMModel


class ReviewCreate(BaseModel):
    """A rating of one map, named by its queue ``item`` token or (unblinded) its id."""

    item: str | None = Field(
        default=None,
        max_length=128,
        description="the map's opaque token from the review queue (works blinded or not)",
    )
    attribution_id: int | None = Field(
        default=None, description="the map's id; refused (404) to blinded reviewers"
    )
    rating: int = Field(ge=1, le=5, description="does the pathological relevance lie on lesions")
    trust: bool = Field(description="would you trust the decision")
    comment: str = Field(default="", max_length=5000)

    @model_validator(mode="after")
    def _one_map(self) -> ReviewCreate:
        if (self.item is None) == (self.attribution_id is None):
            raise ValueError("name the map by exactly one of item and attribution_id")
        return self


class ReviewPublic(ORMModel):
    """A review. For a blinded reviewer ``attribution_id`` is null and ``item`` is their
    opaque token of the map (with the map's blind ``label``). The current user's own reviews
    always carry ``item`` (``GET /reviews/items/{item}`` describes the map, to reopen the
    review); other users' reviews do not."""

    id: int
    attribution_id: int | None
    item: str | None = None
    label: str | None = None
    reviewer_id: int
    rating: int
    trust: bool
    comment: str
    created_at: datetime
    has_correction: bool = False


class ReviewsPublic(BaseModel):
    data: list[ReviewPublic]
    count: int


class MapDisplayStats(BaseModel):
    """What the viewer needs to scale a map's colours (nothing about how it was made)."""

    min: float | None = None
    max: float | None = None
    positive_mass: float | None = None
    negative_mass: float | None = None
    mean_abs: float | None = None


class ReviewQueueItem(BaseModel):
    """One map the current user has not reviewed yet.

    ``item`` is an opaque token of the map for this user: fetch the map through
    ``/reviews/items/{item}/...`` and rate it with ``item``. Blinded, ``attribution_id``,
    ``run_id``, ``run_name`` and ``method`` are null and ``label`` is an opaque name that stays
    the same for this user across reloads.
    """

    item: str
    attribution_id: int | None
    subject_id: int
    label: str
    stats: MapDisplayStats
    run_id: int | None
    run_name: str | None
    method: str | None


class ReviewQueue(BaseModel):
    project_id: int
    blinded: bool
    enforced: bool = Field(
        default=False,
        description="the project's review round is blinded for this user: the server blinds "
        "every answer and ignores blinded=false",
    )
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
