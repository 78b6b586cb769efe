from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from backend.schemas.common import ORMModel
from worker.ml.configs import AttributionMethod


class AttributionCreate(BaseModel):
    run_id: int
    subject_id: int
    method: AttributionMethod = "integrated_gradients"
    # Validated against worker.ml.configs.AttributionConfig (each method's own parameters).
    params: dict[str, Any] = Field(default_factory=dict)


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
