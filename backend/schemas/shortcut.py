"""Shortcut reports and cohort maps: what is asked for and what is answered."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from attrivue_core.configs import AttributionMethod
from backend.schemas.common import ORMModel
from backend.schemas.job import JobPublic

Split = Literal["train", "val", "test"]
Fill = Literal["mean", "blur", "background"]
Corner = Annotated[list[float], Field(min_length=3, max_length=3)]


class BoxRegion(BaseModel):
    """A box drawn by the user, in scanner coordinates (mm), by two opposite corners."""

    kind: Literal["box"] = "box"
    box_mm: Annotated[list[Corner], Field(min_length=2, max_length=2)]

    @field_validator("box_mm")
    @classmethod
    def _a_real_box(cls, corners: list[list[float]]) -> list[list[float]]:
        if not all(math.isfinite(v) for corner in corners for v in corner):
            raise ValueError("box_mm: the corners must be finite numbers (mm)")
        if any(a == b for a, b in zip(corners[0], corners[1], strict=True)):
            raise ValueError("box_mm: the two corners must differ along x, y and z")
        return corners


class TopRelevanceRegion(BaseModel):
    """Each subject's own region: the ``fraction`` of voxels with the largest |relevance| in
    its newest map of the run (subjects without a map are left out)."""

    kind: Literal["top_relevance"] = "top_relevance"
    fraction: float = Field(default=0.01, gt=0, le=0.5)


class ShortcutReportCreate(BaseModel):
    split: Split = "test"
    region: BoxRegion | TopRelevanceRegion = Field(discriminator="kind")
    fill: Fill = Field(
        default="mean",
        description="What replaces the region: the brain's mean intensity, a blurred copy of "
        "the image (Gaussian, 8 mm), or the background (median outside the brain)",
    )
    method: AttributionMethod | None = Field(
        default=None,
        description="Whose maps are read (top-relevance region, relevance outside the brain); "
        "default: each subject's newest map of the run",
    )


class ShortcutFlag(BaseModel):
    kind: Literal["region", "site", "outside_brain"]
    reason: str


class ReportSite(BaseModel):
    site: str | None
    n: int
    n_pathological: int
    n_healthy: int
    auroc: float | None
    accuracy: float
    others_auroc: float | None = None


class CounterfactualMetrics(BaseModel):
    auroc: float | None
    accuracy: float


class Counterfactual(BaseModel):
    region: str
    fill: Fill
    n: int
    n_without_region: int
    before: CounterfactualMetrics
    after: CounterfactualMetrics
    mean_logit_change: float
    mean_logit_change_pathological: float | None
    mean_logit_change_healthy: float | None


class OutsideBrain(BaseModel):
    n_maps: int
    mean_abs_share: float | None
    mean_positive_share: float | None
    mean_volume_share: float | None


class ShortcutResult(BaseModel):
    sites: list[ReportSite]
    counterfactual: Counterfactual | None
    outside_brain: OutsideBrain | None
    thresholds: dict[str, float]


class ShortcutReportPublic(ORMModel):
    id: int
    run_id: int
    split: str
    params: dict[str, Any]
    result: ShortcutResult | None
    flags: list[ShortcutFlag]
    job: JobPublic | None
    created_at: datetime


class ShortcutReportsPublic(BaseModel):
    data: list[ShortcutReportPublic]
    count: int


class CohortMapCreate(BaseModel):
    split: Split = "test"
    label: Literal[0, 1] = 1
    method: AttributionMethod = "integrated_gradients"


class CohortMapPublic(ORMModel):
    id: int
    run_id: int
    split: str
    label: int
    method: str
    reference_subject_id: int | None
    n_subjects: int
    stats: dict[str, Any]
    job: JobPublic | None
    created_at: datetime


class CohortMapsPublic(BaseModel):
    data: list[CohortMapPublic]
    count: int
