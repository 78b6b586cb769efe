"""Validated settings of a training run and of an attribution job.

Every field has a default that runs on a CPU-only machine, so ``RunConfig()`` is a valid run.
New options are added as new fields with defaults: a checkpoint written by an older version
still loads, because its stored config validates against the newer model.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AttributionConfig",
    "BaselineName",
    "EarlyStoppingMetric",
    "GridSize",
    "LossSetting",
    "NetworkName",
    "RiemannMethod",
    "RunConfig",
]

# Registry keys of worker.ml.nets; extend the Literal when a network is registered.
NetworkName = Literal["small_cnn"]
# Only the classification loss exists so far; the attribution-constraint settings of
# method.md section 3 ("la_only", "lc_la_supervised", "lc_la_unsupervised") come later.
LossSetting = Literal["lc_only"]
EarlyStoppingMetric = Literal["val_auroc", "val_loss", "val_accuracy"]
BaselineName = Literal["zero", "blur"]
RiemannMethod = Literal[
    "gausslegendre", "riemann_middle", "riemann_trapezoid", "riemann_left", "riemann_right"
]

GridSize = Annotated[int, Field(ge=8, le=512)]


class RunConfig(BaseModel):
    """Hyper-parameters of one training run.

    Attributes:
        network: Registry key of the classifier (see ``worker.ml.nets.build_network``).
        loss_setting: Which losses are trained; only the classification loss for now.
        epochs: Number of epochs to train in total (a resumed run counts earlier epochs).
        batch_size: Subjects per optimisation step.
        learning_rate: Optimiser step size.
        weight_decay: L2 penalty (decoupled for AdamW).
        optimizer: Optimiser family.
        seed: Seed of every random generator (weights, shuffling, augmentation).
        grid: Working grid (voxels) that every subject is resized to.
        intensity: Intensity normalisation: z-score over non-zero voxels, or 0.5-99.5
            percentiles mapped to [0, 1].
        augment: Light random flips and affine jitter on the training split.
        early_stopping_patience: Epochs without improvement of ``early_stopping_metric``
            before training stops; ``None`` trains for all epochs.
        early_stopping_metric: Validation metric that selects ``best.pt``.
        device: ``auto`` picks CUDA when available.
        amp: Mixed precision; only ever used on CUDA.
    """

    model_config = ConfigDict(extra="forbid")

    network: NetworkName = "small_cnn"
    loss_setting: LossSetting = "lc_only"
    epochs: int = Field(default=3, ge=1, le=1000)
    batch_size: int = Field(default=4, ge=1, le=1024)
    learning_rate: float = Field(default=1e-3, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    seed: int = Field(default=0, ge=0)
    grid: tuple[GridSize, GridSize, GridSize] = (48, 56, 48)
    intensity: Literal["zscore", "percentile"] = "zscore"
    augment: bool = False
    early_stopping_patience: int | None = Field(default=None, ge=1)
    early_stopping_metric: EarlyStoppingMetric = "val_auroc"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True


class AttributionConfig(BaseModel):
    """Settings of one attribution computation (evaluation, through Captum).

    Attributes:
        method: Attribution method; only Integrated Gradients for now.
        steps: Number of integration points along the path.
        baseline: Reference image x': the zero image, or a Gaussian-blurred copy of the input.
        blur_sigma: Standard deviation (working-grid voxels) of the blurred baseline.
        internal_batch_size: Interpolation points evaluated per forward/backward pass;
            bounds memory on whole-brain volumes.
        riemann_method: Quadrature rule along the path (Captum's ``method`` argument).
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["integrated_gradients"] = "integrated_gradients"
    steps: int = Field(default=32, ge=1, le=1000)
    baseline: BaselineName = "zero"
    blur_sigma: float = Field(default=4.0, gt=0.0)
    internal_batch_size: int = Field(default=8, ge=1, le=4096)
    riemann_method: RiemannMethod = "gausslegendre"
