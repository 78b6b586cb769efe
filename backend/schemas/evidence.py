"""Evidence checks of a map: the request, and the stored results."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from backend.schemas.common import ORMModel

EvidenceKind = Literal["model_randomisation", "data_randomisation", "faithfulness"]
DEFAULT_CHECKS: list[EvidenceKind] = ["model_randomisation", "faithfulness"]
Verdict = Literal["passes", "fails"]


class EvidenceCreate(BaseModel):
    """Which checks to run on the map. Data randomisation trains the run's network again on
    permuted labels for ``data_epochs`` epochs, so it is off unless asked for."""

    checks: list[EvidenceKind] = Field(default_factory=lambda: list(DEFAULT_CHECKS), min_length=1)
    data_epochs: int = Field(default=2, ge=1, le=20)
    curve_steps: int = Field(default=20, ge=2, le=100)


class RunEvidenceCreate(EvidenceCreate):
    """The same checks for every computed map of the run on subjects of ``split``."""

    split: Literal["train", "val", "test"]
    method: str | None = None


class RandomisationStep(BaseModel):
    """The similarity of the map after randomising the layers down to ``layer``."""

    layer: str
    spearman_signed: float | None
    spearman_abs: float | None
    ssim_signed: float | None
    ssim_abs: float | None


class ModelRandomisationResult(BaseModel):
    layers: list[str]
    steps: list[RandomisationStep]
    passes: bool
    reason: str


class DataRandomisationResult(BaseModel):
    epochs: int
    spearman_signed: float | None
    spearman_abs: float | None
    ssim_signed: float | None
    ssim_abs: float | None
    passes: bool
    reason: str


class IrofResult(BaseModel):
    """IROF (Rieger & Hansen 2020): the pathological probability as SLIC supervoxels are removed
    in the map's order, most pathological first, and in random orders (their mean). ``auc`` and
    ``random_auc`` are the mean of 1 - p_k / p_0 over the removals: higher removes evidence
    faster."""

    segments: int
    fractions: list[float]
    probabilities: list[float | None]
    random_probabilities: list[float | None]
    auc: float | None
    random_auc: float | None


class FaithfulnessResult(BaseModel):
    """Deletion and insertion curves of the pathological logit, Captum's infidelity and IROF
    (absent from checks stored before IROF was added)."""

    fractions: list[float]
    deletion: list[float]
    insertion: list[float]
    deletion_auc: float
    insertion_auc: float
    auc_gap: float
    infidelity: float | None
    irof: IrofResult | None = None
    passes: bool
    reason: str


class EvidenceResults(BaseModel):
    model_randomisation: ModelRandomisationResult | None = None
    data_randomisation: DataRandomisationResult | None = None
    faithfulness: FaithfulnessResult | None = None


class EvidencePublic(ORMModel):
    id: int
    attribution_id: int
    run_id: int
    checks: list[EvidenceKind]
    status: str
    results: EvidenceResults
    verdict: Verdict | None
    reasons: list[str]
    error: str | None
    job_id: int | None
    created_at: datetime
    # The job's progress in [0, 1] and its latest message, while the checks run.
    progress: float = 0.0
    message: str = ""


class EvidenceListPublic(BaseModel):
    data: list[EvidencePublic]
    count: int
