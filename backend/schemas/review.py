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


class ReviewsPublic(BaseModel):
    data: list[ReviewPublic]
    count: int
