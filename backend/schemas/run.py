from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from backend.schemas.common import ORMModel
from backend.schemas.configs import RunConfigBody


class RunCreate(BaseModel):
    dataset_id: int
    name: str = Field(min_length=1, max_length=200)
    config: RunConfigBody = Field(
        default_factory=dict,
        description="RunConfig fields; those not given keep the preset's values or the "
        "defaults. Validated by the service after the preset is applied.",
    )
    preset: str | None = Field(
        default=None,
        max_length=64,
        description="A named preset (GET /presets): its values are applied first, then the "
        "fields given in config override them.",
    )


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
    # The preset the config started from (GET /presets), if any.
    preset: str | None = None
    # The epoch whose weights are the run's model (best.pt), and the validation metric that
    # chose it: the early-stopping metric, or val_auroc / val_loss where it fell back (an
    # attribution metric while the classifier was at chance, or an undefined metric).
    best_epoch: int | None = None
    best_metric: str | None = None
    # "trained" here, or "imported" (POST /runs/import): then the model's format
    # ("torchscript" or "monai_bundle") and the input spec it was imported with.
    source: str = "trained"
    model_format: str | None = None
    input_spec: dict[str, Any] | None = None


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


class Preset(BaseModel):
    """A named starting configuration of the launch form (attrivue_core.presets)."""

    name: str
    title: str
    description: str
    # RunConfig fields and their values (the rest keep RunConfig's defaults).
    config: dict[str, Any]


class PresetsPublic(BaseModel):
    data: list[Preset]
    count: int


class SubjectPrediction(ORMModel):
    """The best weights' prediction for one subject of a run."""

    subject_id: int
    subject_key: str
    split: str
    site: str
    label: int
    logit: float
    # sigmoid(logit): called pathological at 0.5 or above.
    probability: float


class RunPredictionsPublic(BaseModel):
    run_id: int
    best_epoch: int | None
    best_metric: str | None
    data: list[SubjectPrediction]
    count: int


class SiteMetrics(BaseModel):
    """Classification metrics of one split at one site (``site`` null: all sites together;
    '' for subjects without a site)."""

    split: str
    site: str | None
    n: int
    n_pathological: int
    n_healthy: int
    # Null where the group holds one class only.
    auroc: float | None
    # At probability 0.5.
    accuracy: float
    mean_probability: float


class RunSiteMetricsPublic(BaseModel):
    run_id: int
    threshold: float
    data: list[SiteMetrics]
