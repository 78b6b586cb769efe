from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from attrivue_core.configs import AttributionMethod, RegionSpec
from backend.schemas.common import ORMModel
from backend.schemas.configs import AttributionParamsBody

Split = Literal["train", "val", "test"]


class AttributionCreate(BaseModel):
    run_id: int
    subject_id: int
    method: AttributionMethod = "integrated_gradients"
    # Validated against attrivue_core.configs.AttributionConfig (each method's own parameters).
    params: AttributionParamsBody = Field(default_factory=dict)
    # Segmentation runs only: the region to explain ("why is this segmented?"); default: the
    # whole predicted mask. Refused for classification runs.
    region: RegionSpec | None = None


class AttributionBatchCreate(BaseModel):
    """Maps for several subjects of the run's dataset: name them, or name a split."""

    run_id: int
    subject_ids: list[int] | None = Field(default=None, min_length=1, max_length=10_000)
    split: Split | None = None
    method: AttributionMethod = "integrated_gradients"
    params: AttributionParamsBody = Field(default_factory=dict)

    @model_validator(mode="after")
    def _subjects_or_split(self) -> AttributionBatchCreate:
        if (self.subject_ids is None) == (self.split is None):
            raise ValueError("give either subject_ids or split, not both and not neither")
        return self


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
    region: dict[str, Any] | None = None
    job_id: int | None
    created_at: datetime


class AttributionsPublic(BaseModel):
    data: list[AttributionPublic]
    count: int


class PositivePercentiles(BaseModel):
    """Percentiles of the strictly positive voxels (pathological relevance), for thresholds."""

    p50: float
    p90: float
    p95: float
    p99: float
    p99_9: float


class LesionStats(BaseModel):
    """How the pathological relevance meets the lesion mask (worker.ml.metrics semantics)."""

    lesion_voxels: int
    # Positive mass inside the mask / total positive mass; 0 when there is no positive mass.
    lesion_mass: float
    top_k_percent: float
    # Dice of the top k % voxels (positive ones only) against the mask.
    dice_top_k: float
    # AUROC of A+ as a voxel score for lesion membership; null when the mask covers every voxel.
    voxel_auroc: float | None
    # Whether the maximum of A (if positive) lies in the lesion.
    pointing_game: bool


class AttributionStats(BaseModel):
    attribution_id: int
    subject_id: int
    label: int
    shape: list[int]
    # Voxels of the subject's brain mask: every value below is computed over them only.
    brain_voxels: int | None = None
    min: float
    max: float
    positive_mass: float
    negative_mass: float
    mean_abs: float
    positive_voxels: int
    negative_voxels: int
    # Null when no voxel is positive.
    positive_percentiles: PositivePercentiles | None
    # Present when the subject's lesion mask has at least one voxel.
    lesion: LesionStats | None
    # sum(A+) / sum(|A|) for healthy subjects (label 0); null for pathological ones.
    pathological_share: float | None
