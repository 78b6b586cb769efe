from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from backend.schemas.common import ORMModel


class IGParams(BaseModel):
    steps: int = Field(default=32, ge=1, le=1000)
    baseline: Literal["zero", "blur"] = "zero"
    internal_batch_size: int = Field(default=8, ge=1, le=512)


class AttributionCreate(BaseModel):
    run_id: int
    subject_id: int
    method: Literal["integrated_gradients"] = "integrated_gradients"
    params: IGParams = Field(default_factory=IGParams)


class AttributionPublic(ORMModel):
    id: int
    run_id: int
    subject_id: int
    method: str
    params: dict[str, Any]
    status: str
    convergence_delta: float | None
    logit: float | None
    stats: dict[str, Any]
    job_id: int | None
    created_at: datetime


class AttributionsPublic(BaseModel):
    data: list[AttributionPublic]
    count: int
