from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from backend.schemas.common import ORMModel


class RunCreate(BaseModel):
    dataset_id: int
    name: str = Field(min_length=1, max_length=200)
    # Validated against worker.ml.configs.RunConfig by the service.
    config: dict[str, Any] = Field(default_factory=dict)


class RunPublic(ORMModel):
    id: int
    name: str
    dataset_id: int
    config: dict[str, Any]
    status: str
    metrics: dict[str, Any]
    job_id: int | None
    created_at: datetime
    from_reviews_of: int | None = None


class RunsPublic(BaseModel):
    data: list[RunPublic]
    count: int


class MetricPoint(ORMModel):
    epoch: int
    step: int | None
    name: str
    value: float


class RunMetricsPublic(BaseModel):
    run_id: int
    data: list[MetricPoint]


class ComparedField(BaseModel):
    """One key across the compared runs: a value per run (in the order of ``runs``; null where
    a run lacks the key), and whether they differ."""

    key: str
    values: list[Any]
    differs: bool


class MetricSeries(BaseModel):
    """One metric of one run, epoch by epoch."""

    run_id: int
    name: str
    epochs: list[int]
    values: list[float]


class RunComparison(BaseModel):
    runs: list[RunPublic]
    config: list[ComparedField]  # nested keys flattened with dots: "lambda_a.value"
    differing: list[str]  # the config keys whose values differ
    metrics: list[ComparedField]  # final metrics (RunPublic.metrics)
    series: list[MetricSeries]
