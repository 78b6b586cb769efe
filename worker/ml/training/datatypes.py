"""The records of a training run: its subjects, progress events, step statistics, result.

Shared by the engine (``worker.ml.training.engine``) and every task
(``worker.ml.training.task``); nothing here depends on the task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from worker.ml.transforms import image_item

__all__ = [
    "LABEL_KEY",
    "MASK_AVAILABLE_KEY",
    "PREDICTIONS_FILE",
    "TARGET_GIVEN_KEY",
    "TEST_IG_STEPS",
    "TOP_K_PERCENT",
    "VAL_IG_STEPS",
    "CheckpointMismatchError",
    "Metrics",
    "ProgressEvent",
    "Split",
    "StepStats",
    "SubjectPrediction",
    "SubjectSample",
    "TrainResult",
    "as_split",
]

LABEL_KEY = "label"
MASK_AVAILABLE_KEY = "mask_available"
# 1 where the mask slot of a training item holds a given target map (SubjectSample.target_map)
# instead of the lesion mask: it then rides through the same nearest-neighbour resampling and
# augmentation as a mask would.
TARGET_GIVEN_KEY = "target_given"
# Integrated Gradients of the evaluation maps: 8 points after every epoch (cheap monitoring),
# 16 at the end, where the validation threshold is chosen on maps of the test's own method.
VAL_IG_STEPS = 8
TEST_IG_STEPS = 16
TOP_K_PERCENT = 5.0
PREDICTIONS_FILE = "predictions.csv"

Split = Literal["train", "val", "test"]
_SPLITS: dict[str, Split] = {"train": "train", "val": "val", "test": "test"}
Metrics = dict[str, float | None]


@dataclass
class SubjectSample:
    """One subject of a dataset as training sees it.

    Attributes:
        subject_id: Identifier, for bookkeeping only.
        image: NIfTI image path.
        mask: Lesion mask path, or ``None``.
        label: 1 for pathological, 0 for healthy.
        split: Partition the subject belongs to.
        target: Continuous target of regression runs (``None``: none; such subjects are
            left out of a regression run's validation and test splits).
        target_map: Optional target map of L_A on the subject's grid (uint8 0/1, 255 =
            unconstrained; ``attrivue_core.corrections``), e.g. the lesion mask merged with
            clinicians' corrections. In the ``train`` split it replaces the target built from
            label and mask (the brain restriction still applies); evaluation keeps the mask.
        brain_mask: Optional brain mask path on the image's grid (non-zero = brain): the
            user's, or one computed at import (``attrivue_core.brainmask``). ``None``: computed
            from the image when the run needs one.
        site: Acquisition site, for per-site metrics (``None``: unknown).
        channels: The images of channels 1.. of a multi-modal subject, in the dataset's order,
            on the grid of ``image`` (channel 0); empty: one channel.
    """

    subject_id: str | int
    image: Path
    mask: Path | None
    label: int
    split: Split
    target: float | None = None
    target_map: Path | None = None
    brain_mask: Path | None = None
    site: str | None = None
    channels: tuple[Path, ...] = ()

    def image_item(self) -> str | list[str]:
        """The ``image`` entry of a MONAI item: one path, or one per channel (stacked)."""
        return image_item(self.image, self.channels)


def as_split(value: str) -> Split:
    """A split name read from a manifest or the database, checked.

    Raises:
        ValueError: ``value`` is not ``train``, ``val`` or ``test``.
    """
    try:
        return _SPLITS[value]
    except KeyError:
        raise ValueError(f"unknown split {value!r}: train, val or test") from None


@dataclass
class ProgressEvent:
    """A progress report, sent after every step, every epoch, and once at the end.

    Attributes:
        kind: ``"step"``, ``"epoch"`` or ``"done"``.
        epoch: Current epoch, 1-based (for ``done``: epochs completed).
        epochs: Total epochs of the run.
        step: Step within the epoch, 1-based (``epoch``: equal to ``steps``; ``done``: 0).
        steps: Steps per epoch (``done``: 0).
        loss_c: Classification loss (regression: L_R): of the step, or the epoch mean;
            ``None`` for ``done``.
        grad_norm_c: L2 norm of the gradient of L_C w.r.t. the weights (step value or epoch
            mean); ``None`` for ``done`` and for ``la_only`` (L_C is not trained there).
        metrics: Validation metrics for ``epoch``, test metrics for ``done``, else empty.
        seconds: Seconds since this call of ``train`` started.
        fraction: Progress over the whole run, 0..1.
        loss_a: Attribution loss L_A (step value or epoch mean); ``None`` for ``lc_only``
            and ``done``.
        grad_norm_a: L2 norm of the gradient of lambda * L_A (``la_only``: of L_A) w.r.t.
            the weights; 0 while lambda is 0 (warm-up), where L_A is not back-propagated.
        lambda_a: Lambda of the step (epoch: of its last step); ``None`` where the setting
            has no lambda (``lc_only``, ``la_only``).
        attribution_abs_mean: Mean |A| over all voxels of the training attribution
            (unscaled), the "attribution scale".
        attribution_seconds: Seconds in the attribution's forward and first backward pass
            (the step's, or the epoch's total); the back-propagation of L_A through it is
            counted in ``step_seconds`` only.
        step_seconds: Seconds of the whole optimisation step (the step's, or the epoch's
            total); ``None`` for ``done``.
        grad_ratio: ``grad_norm_a / grad_norm_c`` (step value or epoch mean over the steps
            that took both gradients: the first ``grad_probe_batches`` L_A steps of each
            epoch, or every L_A step with gradient balancing; ``None`` on a step that took
            one backward of their sum, as do ``grad_norm_c``, ``grad_norm_a`` and
            ``grad_cosine``).
        grad_cosine: Cosine between the gradients of L_C and of lambda * L_A w.r.t. the
            weights (step value or epoch mean): below 0 when the constraint pulls against the
            classifier.
        grad_weight_a: Factor that gradient balancing put on the L_A gradient (1 without).
        grad_norm_total: Norm of the applied gradient before clipping (step or epoch mean).
        clip_fraction: Share of the steps whose gradient was clipped (0 or 1 for a step);
            ``None`` without clipping.

    ``lc_only`` runs probe L_A on the first ``grad_probe_batches`` batches of each epoch: on
    those steps ``loss_a``, ``grad_norm_a`` (of the unweighted, weakly supervised L_A, not
    applied), ``grad_ratio``, ``grad_cosine``, ``attribution_abs_mean`` and
    ``attribution_seconds`` are reported too, and the epoch means are those of the probes.
    """

    kind: Literal["step", "epoch", "done"]
    epoch: int
    epochs: int
    step: int
    steps: int
    loss_c: float | None
    grad_norm_c: float | None
    metrics: Metrics
    seconds: float
    fraction: float
    loss_a: float | None = None
    grad_norm_a: float | None = None
    lambda_a: float | None = None
    attribution_abs_mean: float | None = None
    attribution_seconds: float | None = None
    step_seconds: float | None = None
    grad_ratio: float | None = None
    grad_cosine: float | None = None
    grad_weight_a: float | None = None
    grad_norm_total: float | None = None
    clip_fraction: float | None = None


@dataclass
class StepStats:
    """What one optimisation step measured (see ``ProgressEvent`` for the meanings)."""

    loss_c: float
    grad_norm_c: float | None
    step_seconds: float
    loss: float | None = None
    loss_a: float | None = None
    grad_norm_a: float | None = None
    lambda_a: float | None = None
    attribution_abs_mean: float | None = None
    attribution_seconds: float | None = None
    grad_ratio: float | None = None
    grad_cosine: float | None = None
    grad_weight_a: float | None = None
    grad_norm_total: float | None = None
    clip_fraction: float | None = None

    def event_fields(self) -> dict[str, float | None]:
        return {
            "grad_ratio": self.grad_ratio,
            "grad_cosine": self.grad_cosine,
            "grad_weight_a": self.grad_weight_a,
            "grad_norm_total": self.grad_norm_total,
            "clip_fraction": self.clip_fraction,
            "loss_c": self.loss_c,
            "grad_norm_c": self.grad_norm_c,
            "loss_a": self.loss_a,
            "grad_norm_a": self.grad_norm_a,
            "lambda_a": self.lambda_a,
            "attribution_abs_mean": self.attribution_abs_mean,
            "attribution_seconds": self.attribution_seconds,
            "step_seconds": self.step_seconds,
        }


@dataclass
class TrainResult:
    """What a finished training run produced.

    Attributes:
        history: One dict per completed epoch (train loss and gradient norm, validation
            metrics, duration), including epochs done before a resumption.
        test_metrics: Metrics of the best checkpoint on the test split (empty without one):
            classification (``auroc``, ``accuracy``, ``balanced_accuracy``, ``sensitivity``,
            ``specificity``, ``n``, ``loss``; regression: ``mae``, ``rmse``, ``pearson``,
            ``spearman``, ``n``, ``loss``) and attribution against the lesion masks
            (``attr_dice`` at the threshold chosen on validation, ``attr_dice_top5``,
            ``attr_voxel_auroc``, ``attr_voxel_auprc``, ``attr_lesion_mass``,
            ``attr_pointing_game``, ``attr_healthy_share``, ``attr_threshold``,
            ``attr_ig_delta``, ``attr_n_pathological``, ``attr_n_healthy``); ``None`` where
            undefined.
        best_checkpoint: Path of ``best.pt``.
        last_checkpoint: Path of ``last.pt``.
        epochs_completed: Epochs trained in total.
        resumed_from_epoch: Epochs already completed when this call started, or ``None``
            when it started from scratch.
        best_epoch: Epoch whose weights are in ``best.pt``.
        stopped_early: Whether early stopping ended the run.
        best_metric: The validation metric that chose ``best_epoch``: the early-stopping
            metric, or the classification metric it fell back to (``val_auroc`` while the
            classifier was below ``CLASSIFICATION_FLOOR``, ``val_loss`` where a metric was
            undefined); ``None`` without a validation split.
        predictions: The best weights' prediction for every subject of every split
            (classification runs; ``predict_subjects``), also written to
            ``checkpoint_dir/predictions.csv``.
    """

    history: list[dict[str, Any]]
    test_metrics: Metrics
    best_checkpoint: Path
    last_checkpoint: Path
    epochs_completed: int
    resumed_from_epoch: int | None
    best_epoch: int = 0
    stopped_early: bool = False
    best_metric: str | None = None
    predictions: list[SubjectPrediction] = field(default_factory=list)


@dataclass(frozen=True)
class SubjectPrediction:
    """The best weights' output for one subject (``TrainResult.predictions``).

    Attributes:
        subject_id: ``SubjectSample.subject_id``.
        split: The subject's split.
        label: Its label (0 healthy, 1 pathological).
        logit: The pathological logit.
        probability: ``sigmoid(logit)``.
        site: ``SubjectSample.site`` (``None``: unknown).
    """

    subject_id: str | int
    split: Split
    label: int
    logit: float
    probability: float
    site: str | None = None


class CheckpointMismatchError(ValueError):
    """Raised when last.pt was written by a run with an incompatible configuration."""
