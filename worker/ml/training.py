"""Training of a classifier with the classification loss and the attribution constraint.

The four loss settings of method.md section 3 (``RunConfig.loss_setting``): ``lc_only`` keeps
a plain forward/backward step; the others compute a differentiable attribution
(``worker.ml.attribution.differentiable.attribute`` with ``create_graph=True``), build the
target map (``worker.ml.losses.target_map``) and back-propagate L_A through it ("double
back-propagation"). Each step reports L_C, L_A, the gradient norm of L_C and of lambda * L_A
(from one ``torch.autograd.grad`` per term, whose sum becomes ``p.grad``), the attribution
scale and the time spent in the attribution.

A regression run (``RunConfig.task == "regression"``, ``worker.ml.regression``) trains the same
way with the prediction loss L_R in place of L_C (reported under the same names) and the
regression constraint in place of the target map; its validation and test metrics are MAE,
RMSE and correlations instead of AUROC and accuracy.

Every run, whatever its setting, ends with attribution metrics on the test split (Integrated
Gradients of the best weights against the lesion masks, ``worker.ml.evaluation``); with
``val_attribution`` the validation split gets them after every epoch too.

``train`` is safe to call again after the process was killed: it finds
``checkpoint_dir/last.pt`` and continues with the next epoch, reproducing the run it
interrupted (weights, optimiser, RNG states and per-epoch data order are all restored).

Checkpoint layout (``torch.save`` of a dict, loadable with ``weights_only=True``):
    ``last.pt``  written after every epoch: everything needed to resume.
    ``best.pt``  written when the early-stopping metric improves: model and config.
Both are written to a temporary file in ``checkpoint_dir`` and renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose, Transform
from monai.utils import set_determinism
from scipy.optimize import minimize_scalar
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from attrivue_core.configs import RunConfig
from worker.ml.attribution.differentiable import attribute
from worker.ml.evaluation import AttributionEvaluation, evaluate_attributions, json_safe
from worker.ml.gradients import GradientBalancer, GradientStats, clip, combine, la_due, measure
from worker.ml.losses import attribution_loss, target_map, target_mode_for, total_loss
from worker.ml.metrics import classification_metrics as _classification_metrics
from worker.ml.nets import pathological_logit
from worker.ml.regression import (
    TARGET_KEY,
    build_model,
    constraints_for,
    missing_targets,
    prediction_loss,
    regression_attribution_loss,
    regression_metrics,
    target_scale,
)
from worker.ml.transforms import BRAIN_KEY, IMAGE_KEY, MASK_KEY, preprocess_for

__all__ = [
    "BEST_CHECKPOINT",
    "CHECKPOINT_FORMAT",
    "LAST_CHECKPOINT",
    "PREDICTIONS_FILE",
    "CheckpointMismatchError",
    "ProgressEvent",
    "SubjectPrediction",
    "SubjectSample",
    "TrainResult",
    "TrainingCancelled",
    "calibration_offset",
    "cancel_checks",
    "classification_metrics",
    "load_baseline",
    "load_model",
    "predict_subjects",
    "select_device",
    "train",
]

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
CHECKPOINT_FORMAT = 1
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

Split = Literal["train", "val", "test"]
Metrics = dict[str, float | None]

# Fields that may differ between the run that wrote last.pt and the run that resumes it:
# they change how long or where training goes on, not what has been learned so far.
_RESUMABLE_CHANGES = frozenset(
    {"epochs", "early_stopping_patience", "device", "amp", "val_attribution", "grad_probe_batches"}
)
# Metrics with few distinct values on a small validation split, and the weight of the
# calibrated validation loss that breaks their ties (small enough never to outweigh one
# subject pair of AUROC on 100 subjects).
_TIED_OFTEN = frozenset({"val_auroc", "val_accuracy"})
_TIE_BREAK = 1e-5
_HIGHER_IS_BETTER = {
    "val_auroc": True,
    "val_accuracy": True,
    "val_loss": False,
    "val_attr_auroc": True,
    "val_lesion_mass": True,
    "val_attr_dice": True,
    "val_dice": True,
    "val_mae": False,
}
# Early stopping on an attribution metric falls back to a classification metric while the
# classifier has not learned: an epoch whose val_auroc is below this floor is scored by its
# val_auroc (then val_loss), and never beats an epoch at or above it (see ``_selection``).
CLASSIFICATION_FLOOR = 0.6
_ATTRIBUTION_MONITORS = frozenset({"val_attr_auroc", "val_lesion_mass", "val_attr_dice"})
PREDICTIONS_FILE = "predictions.csv"


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
            unconstrained; ``worker.ml.corrections``), e.g. the lesion mask merged with
            clinicians' corrections. In the ``train`` split it replaces the target built from
            label and mask (the brain restriction still applies); evaluation keeps the mask.
        brain_mask: Optional brain mask path on the image's grid (non-zero = brain): the
            user's, or one computed at import (``worker.ml.brainmask``). ``None``: computed
            from the image when the run needs one.
        site: Acquisition site, for per-site metrics (``None``: unknown).
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
            that took both gradients).
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
class _StepStats:
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


class TrainingCancelled(Exception):
    """Raised when ``should_stop`` asked training to stop; last.pt is left untouched."""


CANCEL_POLL_SECONDS = 1.0  # at most one ``should_stop`` call per this many seconds in a step


@contextlib.contextmanager
def cancel_checks(
    model: nn.Module, should_stop: Callable[[], bool] | None, *, what: str = "a step"
) -> Iterator[None]:
    """Poll ``should_stop`` before each forward pass of ``model`` while the context is open.

    Between steps is not often enough: one step of a large volume with a differentiable
    attribution loss runs many forward passes (every chunk of IG's path points), and a
    Captum map or an evaluation pass likewise. The check runs at most every
    ``CANCEL_POLL_SECONDS`` (``should_stop`` may read a database) and raises
    ``TrainingCancelled`` from inside the pass; no weight or checkpoint is written after it.
    """
    if should_stop is None:
        yield
        return
    last = [time.monotonic()]

    def check(_module: nn.Module, _args: Any) -> None:
        now = time.monotonic()
        if now - last[0] < CANCEL_POLL_SECONDS:
            return
        last[0] = now
        if should_stop():
            raise TrainingCancelled(f"cancelled during {what}")

    handle = model.register_forward_pre_hook(check)
    try:
        yield
    finally:
        handle.remove()


class CheckpointMismatchError(ValueError):
    """Raised when last.pt was written by a run with an incompatible configuration."""


@dataclass
class _State:
    """Mutable bookkeeping of a run; stored in last.pt."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    # 1 where the best epoch was scored by the early-stopping metric itself, 0 where it fell
    # back to val_auroc because the classifier was below CLASSIFICATION_FLOOR.
    best_tier: int = 1
    best_metric: str | None = None


@dataclass
class _Loop:
    """What one training call works with."""

    config: RunConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    device: torch.device
    use_amp: bool
    checkpoint_dir: Path
    fingerprint: str
    progress: Callable[[ProgressEvent], None] | None
    should_stop: Callable[[], bool] | None
    balancer: GradientBalancer
    started: float = field(default_factory=time.monotonic)
    # attribution_baseline "healthy": the healthy training images (R, C, D, H, W) and their
    # mean (1, C, D, H, W), on the device; None with the zero baseline.
    references: torch.Tensor | None = None
    baseline: torch.Tensor | None = None

    def emit(self, event: ProgressEvent) -> None:
        if self.progress is not None:
            self.progress(event)

    def check_cancel(self, epoch: int) -> None:
        if self.should_stop is not None and self.should_stop():
            raise TrainingCancelled(f"training cancelled during epoch {epoch}")

    def elapsed(self) -> float:
        return time.monotonic() - self.started


# --------------------------------------------------------------------------- public API


def select_device(name: str) -> torch.device:
    """Resolve a device setting.

    Args:
        name: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns:
        The torch device; ``auto`` is CUDA when available.

    Raises:
        RuntimeError: If CUDA is requested but unavailable.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    return torch.device(name)


def train(
    config: RunConfig,
    subjects: list[SubjectSample],
    *,
    checkpoint_dir: Path,
    progress: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``config.network`` on the ``train`` split, validating every epoch.

    Resumes from ``checkpoint_dir/last.pt`` when it exists. The test split is evaluated with
    the weights of ``best.pt`` at the end, classification and attribution metrics (the Dice
    threshold of the attribution maps is chosen on the validation split).

    Args:
        config: Run configuration.
        subjects: All subjects; their ``split`` decides their role.
        checkpoint_dir: Directory of ``last.pt`` and ``best.pt`` (created if missing).
        progress: Called with a ``ProgressEvent`` after every step, every epoch, and at the end.
        should_stop: Polled before every step; returning True cancels the run.

    Returns:
        The history, test metrics and checkpoint paths.

    Raises:
        TrainingCancelled: If ``should_stop`` returned True.
        CheckpointMismatchError: If ``last.pt`` belongs to an incompatible configuration.
        ValueError: If the subjects are unusable (no training subject, labels not 0/1, or a
            setting with lesion-mask targets and no pathological training subject with a mask).
    """
    if config.task == "segmentation":
        from worker.ml.segmentation import train_segmentation

        return train_segmentation(
            config,
            subjects,
            checkpoint_dir=checkpoint_dir,
            progress=progress,
            should_stop=should_stop,
        )
    _validate_subjects(subjects, config)
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    device = select_device(config.device)
    use_amp = config.amp and device.type == "cuda"
    if config.amp and not use_amp and "amp" in config.model_fields_set:
        # The default (amp unset) means "where available"; an explicit request is warned about.
        warnings.warn(
            f"amp=True has no effect on device {device.type!r}: mixed precision runs on CUDA "
            "only; training in float32",
            RuntimeWarning,
            stacklevel=2,
        )
    set_determinism(seed=config.seed)

    model = build_model(config, subjects).to(device)
    loop = _Loop(
        config=config,
        model=model,
        optimizer=_build_optimizer(config, model),
        scaler=torch.amp.GradScaler(device.type, enabled=use_amp),
        device=device,
        use_amp=use_amp,
        checkpoint_dir=checkpoint_dir,
        fingerprint=_fingerprint(subjects, with_targets=config.task == "regression"),
        progress=progress,
        should_stop=should_stop,
        balancer=GradientBalancer(config),
    )
    state, rng_state = _resume(loop)
    resumed_from = state.epoch if rng_state is not None else None

    datasets = _build_datasets(config, subjects)
    loop.references, loop.baseline = _healthy_references(config, subjects, datasets, device)
    if rng_state is not None:
        # Restored after the datasets are built so the RNG continues exactly where the
        # interrupted run left it at the end of its last completed epoch.
        _set_rng_state(rng_state)
    with cancel_checks(model, should_stop, what="a training step"):
        _run_epochs(loop, state, datasets)
        offset = _calibrate(loop, datasets)
        test_metrics = _evaluate_test(loop, datasets)
        predictions = predict_subjects(loop, datasets, subjects)
    if offset is not None:
        test_metrics["calibration_offset"] = offset
    result = finish(loop, state, test_metrics, checkpoint_dir, resumed_from)
    result.predictions = predictions
    return result


def finish(
    loop: Any,
    state: Any,
    test_metrics: Metrics,
    checkpoint_dir: Path,
    resumed_from: int | None,
) -> TrainResult:
    """Send the ``done`` event and describe the finished run (every task's loop ends here)."""
    config = loop.config
    loop.emit(
        ProgressEvent(
            kind="done",
            epoch=state.epoch,
            epochs=config.epochs,
            step=0,
            steps=0,
            loss_c=None,
            grad_norm_c=None,
            metrics=test_metrics,
            seconds=loop.elapsed(),
            fraction=1.0,
        )
    )
    return TrainResult(
        history=state.history,
        test_metrics=test_metrics,
        best_checkpoint=checkpoint_dir / BEST_CHECKPOINT,
        last_checkpoint=checkpoint_dir / LAST_CHECKPOINT,
        epochs_completed=state.epoch,
        resumed_from_epoch=resumed_from,
        best_epoch=state.best_epoch,
        stopped_early=_patience_exhausted(config, state) and state.epoch < config.epochs,
        best_metric=state.best_metric,
    )


def load_model(
    checkpoint_path: Path, *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, RunConfig]:
    """Rebuild a trained network from ``best.pt`` or ``last.pt``.

    Args:
        checkpoint_path: Checkpoint written by ``train``.
        device: Device to load the weights onto.

    Returns:
        The network in eval mode, and the configuration it was trained with.
    """
    payload = _load_payload(Path(checkpoint_path), device)
    config = RunConfig.model_validate(payload["config"])
    model = build_model(config)
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), config


def load_baseline(checkpoint_path: Path) -> torch.Tensor | None:
    """The IG reference ``(C, D, H, W)`` a run's maps use (``attribution_baseline="healthy"``),
    or ``None`` for the zero image, from its ``best.pt``."""
    payload = _load_payload(Path(checkpoint_path), "cpu")
    baseline = payload.get("baseline")
    return None if baseline is None else torch.as_tensor(baseline, dtype=torch.float32)


def classification_metrics(
    labels: Sequence[int] | np.ndarray,
    probabilities: Sequence[float] | np.ndarray,
    *,
    threshold: float = 0.5,
) -> Metrics:
    """Binary classification metrics (pathological = positive class).

    Args:
        labels: True labels, 0 or 1.
        probabilities: Predicted probabilities of the pathological class.
        threshold: Probability at or above which a subject is called pathological.

    Returns:
        ``auroc``, ``accuracy``, ``balanced_accuracy``, ``sensitivity``, ``specificity`` and
        ``n``; a metric that is undefined for these labels (one class only) is ``None``.
    """
    if len(labels) == 0:
        return {}
    # One implementation (worker.ml.metrics); stored metrics are JSON, so nan becomes None.
    return json_safe(_classification_metrics(labels, probabilities, threshold=threshold))


# --------------------------------------------------------------------------- setup


def _validate_subjects(subjects: Sequence[SubjectSample], config: RunConfig) -> None:
    """Reject datasets training cannot use, before any work is done."""
    if not any(s.split == "train" for s in subjects):
        raise ValueError("no subject in split 'train'")
    missing = missing_targets(subjects) if config.task == "regression" else []
    if missing:
        raise ValueError(f"regression needs a target on every training subject; missing: {missing}")
    bad = [s.subject_id for s in subjects if s.label not in (0, 1)]
    if bad:
        raise ValueError(f"labels must be 0 or 1; offending subjects: {bad[:10]}")
    if (
        config.task == "classification"
        and target_mode_for(config.loss_setting) == "supervised"
        and not any(
            s.split == "train" and s.label == 1 and (s.mask is not None or s.target_map is not None)
            for s in subjects
        )
    ):
        raise ValueError(
            f"loss setting {config.loss_setting!r} takes its targets from lesion masks, but no "
            "pathological subject of the 'train' split has a mask; add masks or use "
            "'lc_la_unsupervised'"
        )


def _fingerprint(subjects: Sequence[SubjectSample], *, with_targets: bool = False) -> str:
    """Digest of who is in which split with which label (and target, for regression runs;
    paths may move between attempts)."""
    rows = sorted(
        (str(s.subject_id), s.split, int(s.label), *([s.target] if with_targets else []))
        for s in subjects
    )
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _needs_masks(config: RunConfig, split: Split) -> bool:
    """Whether a split's lesion masks are read: always for evaluation (validation, test), and
    for training where the targets of L_A come from them."""
    if config.task == "regression":
        return split != "train" or "outside_lesions" in constraints_for(config)
    return split != "train" or target_mode_for(config.loss_setting) == "supervised"


def _build_optimizer(config: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Create the optimiser named in the config."""
    params = model.parameters()
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.learning_rate, momentum=0.9, weight_decay=config.weight_decay
    )


class _CompleteItem(Transform):
    """Last step of every split: plain tensors, and a mask for every subject.

    Subjects without a lesion mask get an all-zero placeholder and ``mask_available = 0``, so
    that batches collate and ``target_map`` leaves them unconstrained where a mask is needed.
    """

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        item = dict(data)
        image = _plain(item[IMAGE_KEY])  # (C, D, H, W)
        item[IMAGE_KEY] = image
        mask = item.get(MASK_KEY)
        item[MASK_AVAILABLE_KEY] = np.float32(mask is not None)
        item[MASK_KEY] = (
            torch.zeros_like(image[:1]) if mask is None else _plain(mask).to(torch.float32)
        )  # (1, D, H, W)
        given = float(item.get(TARGET_GIVEN_KEY, 0.0))
        item[TARGET_GIVEN_KEY] = np.float32(given)
        if given > 0.5:  # a stored target map: 255 (unconstrained) becomes NaN
            item[MASK_KEY] = decode_given_target(item[MASK_KEY])
        return item


def _plain(tensor: Any) -> torch.Tensor:
    """Drop MetaTensor bookkeeping, which is useless inside the network and costs time."""
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else torch.as_tensor(tensor)


def _build_datasets(
    config: RunConfig, subjects: Sequence[SubjectSample]
) -> dict[str, CacheDataset]:
    """Cache the deterministic preprocessing of each split (augmentation runs per epoch)."""
    datasets = {}
    splits: tuple[Split, ...] = ("train", "val", "test")
    for split in splits:
        with_masks = _needs_masks(config, split)
        regression = config.task == "regression"
        items = [
            _as_item(s, with_masks, split, with_target=regression)
            for s in subjects
            if s.split == split and not (regression and s.target is None)
        ]
        if not items:
            continue
        transform = preprocess_for(config, augment=config.augment and split == "train")
        transform = Compose([*transform.transforms, _CompleteItem()])
        datasets[split] = CacheDataset(items, transform, cache_rate=1.0, progress=False)
    return datasets


def _healthy_references(
    config: RunConfig,
    subjects: Sequence[SubjectSample],
    datasets: dict[str, CacheDataset],
    device: torch.device,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The healthy training images and their mean, for ``attribution_baseline="healthy"``.

    Preprocessed without augmentation (the references of a path attribution are fixed data,
    not random views). ``(None, None)`` with the zero baseline.
    """
    if config.attribution_baseline != "healthy":
        return None, None
    healthy = [s for s in subjects if s.split == "train" and s.label == 0]
    if not healthy:
        raise ValueError("attribution_baseline 'healthy' needs healthy subjects in the train split")
    if config.augment:
        transform = preprocess_for(config)
        images = [_plain(transform(_as_item(s, False, "val"))[IMAGE_KEY]) for s in healthy]
    else:
        items = (datasets["train"][i] for i in range(len(datasets["train"])))
        images = [item[IMAGE_KEY] for item in items if float(item[LABEL_KEY]) < 0.5]
    bank = torch.stack([torch.as_tensor(image, dtype=torch.float32) for image in images])
    bank = bank.to(device)  # (R, C, D, H, W)
    return bank, bank.mean(dim=0, keepdim=True)


def _as_item(
    subject: SubjectSample, with_masks: bool, split: Split, with_target: bool = False
) -> dict[str, Any]:
    """Turn a subject into the dict the MONAI transforms read."""
    item: dict[str, Any] = {IMAGE_KEY: str(subject.image), LABEL_KEY: np.float32(subject.label)}
    if subject.brain_mask is not None:
        item[BRAIN_KEY] = str(subject.brain_mask)
    if with_target:
        item[TARGET_KEY] = np.float32(subject.target)
    if split == "train" and subject.target_map is not None:
        item[MASK_KEY] = str(subject.target_map)
        item[TARGET_GIVEN_KEY] = np.float32(1.0)
    elif with_masks and subject.mask is not None:
        item[MASK_KEY] = str(subject.mask)
    return item


def _epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A well-mixed 32-bit seed per (run seed, epoch), so each epoch's shuffling and
    augmentation are reproducible after a resumption without replaying earlier epochs.
    ``stream`` gives independent seeds for other uses within the epoch."""
    entropy = [seed, epoch] if stream == 0 else [seed, epoch, stream]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _loader(dataset: CacheDataset, batch_size: int, *, shuffle: bool, seed: int) -> DataLoader:
    """Build a single-process loader whose order and augmentation depend only on ``seed``."""
    # A final batch of one image would break batch norm in training mode; drop it.
    drop_last = shuffle and len(dataset) > batch_size and len(dataset) % batch_size == 1
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=0,
        generator=torch.Generator().manual_seed(seed),
    )


# --------------------------------------------------------------------------- the loop


def _run_epochs(loop: _Loop, state: _State, datasets: dict[str, CacheDataset]) -> None:
    """Train from ``state.epoch + 1`` to ``config.epochs`` or until patience runs out."""
    config = loop.config
    while state.epoch < config.epochs and not _patience_exhausted(config, state):
        epoch = state.epoch + 1
        seed = _epoch_seed(config.seed, epoch)
        train_loader = _loader(datasets["train"], config.batch_size, shuffle=True, seed=seed)
        epoch_start = time.monotonic()
        summary = _train_epoch(loop, train_loader, epoch)
        loop.check_cancel(epoch)
        val_metrics = _evaluate_val(loop, datasets.get("val"))
        record = json_safe(
            {
                "epoch": epoch,
                "train_loss": summary.loss,
                "train_loss_c": summary.loss_c,
                "train_grad_norm_c": summary.grad_norm_c,
                "train_loss_a": summary.loss_a,
                "train_grad_norm_a": summary.grad_norm_a,
                "lambda_a": summary.lambda_a,
                "train_attribution_abs_mean": summary.attribution_abs_mean,
                "train_attribution_seconds": summary.attribution_seconds,
                "train_step_seconds": summary.step_seconds,
                **_instrumentation_record(summary),
                "amp_active": float(loop.use_amp),
                **val_metrics,
                "learning_rate": float(loop.optimizer.param_groups[0]["lr"]),
                "seconds": time.monotonic() - epoch_start,
            }
        )
        state.epoch = epoch
        state.history.append(record)
        improved = _update_best(config, state, val_metrics)
        # best.pt before last.pt: if the process dies in between, last.pt still points at
        # the previous epoch, which is redone and rewrites best.pt identically.
        if improved:
            _atomic_save(_best_payload(loop, state), loop.checkpoint_dir / BEST_CHECKPOINT)
        _atomic_save(_last_payload(loop, state), loop.checkpoint_dir / LAST_CHECKPOINT)
        loop.emit(
            ProgressEvent(
                kind="epoch",
                epoch=epoch,
                epochs=config.epochs,
                step=len(train_loader),
                steps=len(train_loader),
                metrics=val_metrics,
                seconds=loop.elapsed(),
                fraction=epoch / config.epochs,
                **summary.event_fields(),
            )
        )


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _sum_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.sum(present)) if present else None


def _train_epoch(loop: _Loop, loader: DataLoader, epoch: int) -> _StepStats:
    """Run one epoch of optimisation.

    Returns:
        Epoch means of the losses, gradient norms and attribution scale; lambda of the last
        step; total seconds (attribution and whole steps).
    """
    loop.model.train()
    steps = len(loader)
    config = loop.config
    # EG draws its references from a generator of its own, seeded per epoch, so a resumed run
    # draws what the interrupted one would have.
    generator = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch, stream=1))
    records: list[_StepStats] = []
    for step, batch in enumerate(loader, start=1):
        loop.check_cancel(epoch)
        position = (epoch - 1) + (step - 1) / steps  # fractional 0-based epoch, for lambda
        if config.loss_setting == "lc_only":
            if step <= config.grad_probe_batches:
                stats = _constrained_step(loop, batch, position, generator, probe=True)
            else:
                stats = _train_step(loop, batch)
        elif la_due((epoch - 1) * steps + step - 1, config.la_every_n_steps):
            stats = _constrained_step(loop, batch, position, generator)
        else:
            stats = _train_step(loop, batch)
        records.append(stats)
        done = (epoch - 1) * steps + step
        loop.emit(
            ProgressEvent(
                kind="step",
                epoch=epoch,
                epochs=config.epochs,
                step=step,
                steps=steps,
                metrics={},
                seconds=loop.elapsed(),
                fraction=min(done / (config.epochs * steps), 1.0),
                **stats.event_fields(),
            )
        )
    return _StepStats(
        loss_c=float(np.mean([r.loss_c for r in records])),
        grad_norm_c=_mean_or_none([r.grad_norm_c for r in records]),
        step_seconds=float(np.sum([r.step_seconds for r in records])),
        loss=_mean_or_none([r.loss for r in records]),
        loss_a=_mean_or_none([r.loss_a for r in records]),
        grad_norm_a=_mean_or_none([r.grad_norm_a for r in records]),
        lambda_a=records[-1].lambda_a if records else None,
        attribution_abs_mean=_mean_or_none([r.attribution_abs_mean for r in records]),
        attribution_seconds=_sum_or_none([r.attribution_seconds for r in records]),
        grad_ratio=_mean_or_none([r.grad_ratio for r in records]),
        grad_cosine=_mean_or_none([r.grad_cosine for r in records]),
        grad_weight_a=_mean_or_none([r.grad_weight_a for r in records]),
        grad_norm_total=_mean_or_none([r.grad_norm_total for r in records]),
        clip_fraction=_mean_or_none([r.clip_fraction for r in records]),
    )


def _instrumentation_record(summary: _StepStats) -> dict[str, float | None]:
    """History keys of the gradient instrumentation (worker.ml.gradients) of one epoch."""
    share = None
    if summary.attribution_seconds is not None and summary.step_seconds:
        share = summary.attribution_seconds / summary.step_seconds
    return {
        "train_grad_ratio": summary.grad_ratio,
        "train_grad_cosine": summary.grad_cosine,
        "train_grad_weight_a": summary.grad_weight_a,
        "train_grad_norm_total": summary.grad_norm_total,
        "train_clip_fraction": summary.clip_fraction,
        "train_attribution_share": share,
    }


def _train_step(loop: _Loop, batch: dict[str, Any]) -> _StepStats:
    """One optimisation step on L_C alone (``lc_only``): one forward, one backward."""
    started = time.perf_counter()
    images, labels = _batch_tensors(batch, loop.device)
    loop.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=loop.device.type, dtype=torch.float16, enabled=loop.use_amp):
        logits = pathological_logit(loop.model(images))  # (B,)
    # The loss is computed in float32 even under autocast, for a stable BCE.
    loss_c = _head_loss(loop, logits, labels, batch)
    loop.scaler.scale(loss_c).backward()
    # Unscale first so the reported norm is that of the true gradient of L_C.
    loop.scaler.unscale_(loop.optimizer)
    params = [p for p in loop.model.parameters() if p.requires_grad]
    grad_norm_c, clipped = clip(params, loop.config.grad_clip_norm)
    loop.scaler.step(loop.optimizer)
    loop.scaler.update()
    loss_value = float(loss_c.detach())
    return _StepStats(
        loss_c=loss_value,
        grad_norm_c=grad_norm_c,
        step_seconds=_since(started, loop.device),
        loss=loss_value,
        grad_norm_total=grad_norm_c,
        clip_fraction=None if clipped is None else float(clipped),
    )


def _attribution_params(
    config: RunConfig,
    generator: torch.Generator,
    *,
    baseline: torch.Tensor | None = None,
    references: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Keyword parameters of ``attribute`` for the configured training attributions.

    ``baseline`` (IG) and ``references`` (EG) are those of ``attribution_baseline="healthy"``;
    ``None`` keeps each method's default (the zero image; the other images of the batch).
    """
    params: dict[str, Any] = {"create_graph": True}
    if "integrated_gradients" in config.train_attribution:
        params.update(steps=config.ig_steps, method=config.ig_method)
        if baseline is not None:
            params["baseline"] = baseline
    if "expected_gradients" in config.train_attribution:
        params.update(
            k=config.eg_k,
            zero_reference_prob=config.eg_zero_reference_prob,
            generator=generator,
        )
        if references is not None:
            params["references"] = references
    return params


def _constrained_step(
    loop: _Loop,
    batch: dict[str, Any],
    position: float,
    generator: torch.Generator,
    *,
    probe: bool = False,
) -> _StepStats:
    """One optimisation step of a setting with L_A (double back-propagation).

    The gradients of L_C and of lambda * L_A are taken separately (``torch.autograd.grad``,
    the first keeping the shared graph) and combined into ``p.grad`` by
    ``worker.ml.gradients`` (a plain sum, or balanced; then clipped if configured): the two
    backward passes that the total loss needs anyway, with each term's norm and their cosine
    as by-products.

    With ``probe`` (the instrumentation of ``lc_only``), L_A is the weakly supervised one,
    its gradient is measured but not applied, and the step trains L_C alone.
    """
    config = loop.config
    setting = "lc_la_unsupervised" if probe else config.loss_setting
    model = loop.model
    started = time.perf_counter()
    images, labels = _batch_tensors(batch, loop.device)
    masks = batch[MASK_KEY]
    masks = _plain(masks).to(loop.device, non_blocking=True)  # (B, 1, D, H, W)
    available = torch.as_tensor(batch[MASK_AVAILABLE_KEY]).to(loop.device) > 0.5  # (B,)
    loop.optimizer.zero_grad(set_to_none=True)

    kwargs = _attribution_params(
        config, generator, baseline=loop.baseline, references=loop.references
    )
    gain = _attribution_gain(loop)
    explained = model if gain == 1.0 else _ScaledLogit(model, gain)
    # In eval mode the attribution's own F(x) is not the train-mode logit L_C needs, unless
    # the network has no layer that behaves differently (instance norm, no dropout).
    separate_forward = config.attribution_mode == "eval" and _mode_dependent(model)
    with torch.autocast(device_type=loop.device.type, dtype=torch.float16, enabled=loop.use_amp):
        if separate_forward:
            # The train-mode forward comes first: it updates the batch-norm running statistics
            # in place, which the eval-mode attribution graph then saves for its backward.
            logits = pathological_logit(model(images))  # (B,)
            attribution_started = _now(loop.device)
            with _eval_mode(model):
                out = attribute(explained, images, config.train_attribution, **kwargs)
        else:
            attribution_started = _now(loop.device)
            with _eval_mode(model) if config.attribution_mode == "eval" else _unchanged():
                out = attribute(explained, images, config.train_attribution, **kwargs)
            # Gradient and IG evaluate F(x) with its graph anyway (in train mode, the forward
            # that updates the running statistics); EG does not.
            logits = (
                out.logits / gain if out.logits is not None else pathological_logit(model(images))
            )
        attribution_seconds = _since(attribution_started, loop.device)
    attributions = out.attributions.float()  # (B, C, D, H, W), gain * A
    loss_c = _head_loss(loop, logits, labels, batch)
    brain = (images != 0).any(dim=1, keepdim=True) if config.restrict_to_brain else None
    temperature = config.attribution_scale * float(np.prod(images.shape[2:]))
    if config.task == "regression":
        loss_a = _regression_constraint(loop, batch, attributions, masks, available, brain)
    else:
        mode = target_mode_for(setting)
        assert mode is not None  # every setting but lc_only has a target mode
        targets = target_map(
            labels, masks, mode=mode, brain_mask=brain, mask_available=available
        )  # (B, 1, D, H, W)
        if TARGET_GIVEN_KEY in batch:
            targets = with_given_targets(targets, masks, batch[TARGET_GIVEN_KEY], brain)
        loss_a = attribution_loss(
            attributions,
            targets,
            kind=config.attribution_loss,
            scale=temperature / gain,
            balance=config.attribution_balance,
        )
    lam = None if setting == "la_only" or probe else config.lambda_a.at(position)
    loss = loss_c if probe else total_loss(loss_c, loss_a, lam or 0.0, setting)  # reported

    # grad(loss) = grad(L_C) + grad(lambda * L_A) (la_only: grad(L_A) alone), term by term.
    params = [p for p in model.parameters() if p.requires_grad]
    scale = float(loop.scaler.get_scale()) if loop.use_amp else 1.0
    weighted_a = loss_a if lam is None else lam * loss_a
    train_a = lam is None or lam > 0.0  # during a warm-up at 0, skip the double backward
    grads_c = None
    if setting != "la_only":
        grads_c = torch.autograd.grad(
            loop.scaler.scale(loss_c), params, retain_graph=train_a, allow_unused=True
        )
    grads_a = None
    if train_a:
        # allow_unused: e.g. the head's bias moves the logit but not its input gradient.
        grads_a = torch.autograd.grad(loop.scaler.scale(weighted_a), params, allow_unused=True)
    gradients = measure(grads_c, grads_a, scale)
    w_c, w_a = loop.balancer.weights(
        gradients, lam=lam, loss_c=float(loss_c.detach()), loss_a=float(loss_a.detach())
    )
    grads_a = loop.balancer.adjust(grads_c, grads_a)
    combine(params, grads_c, None if probe else grads_a, w_c=w_c, w_a=w_a)
    loop.scaler.unscale_(loop.optimizer)
    gradients.norm_total, gradients.clipped = clip(params, config.grad_clip_norm)
    loop.scaler.step(loop.optimizer)
    loop.scaler.update()
    return _StepStats(
        loss_c=float(loss_c.detach()),
        grad_norm_c=gradients.norm_c,
        step_seconds=_since(started, loop.device),
        loss=float(loss.detach()),
        loss_a=float(loss_a.detach()),
        grad_norm_a=0.0 if grads_a is None else gradients.norm_a,
        lambda_a=lam,
        attribution_abs_mean=float(attributions.detach().abs().mean()) / gain,
        attribution_seconds=attribution_seconds,
        **_gradient_fields(gradients, w_a=w_a, applied=grads_a is not None and not probe),
    )


def _gradient_fields(stats: GradientStats, *, w_a: float, applied: bool) -> dict[str, Any]:
    """``_StepStats`` fields of the instrumentation of one step."""
    return {
        "grad_ratio": stats.ratio,
        "grad_cosine": stats.cosine,
        "grad_weight_a": w_a if applied else None,
        "grad_norm_total": stats.norm_total,
        "clip_fraction": None if stats.clipped is None else float(stats.clipped),
    }


def _batch_targets(batch: dict[str, Any], device: torch.device) -> torch.Tensor:
    """Regression targets ``(B,)`` of a batch, float32 on ``device``."""
    return torch.as_tensor(batch[TARGET_KEY], dtype=torch.float32).to(device)


def _head_loss(
    loop: _Loop, outputs: torch.Tensor, labels: torch.Tensor, batch: dict[str, Any]
) -> torch.Tensor:
    """L_C: BCE of the pathological logit, or L_R of the predicted target (float32)."""
    if loop.config.task == "regression":
        return prediction_loss(
            outputs.float(),
            _batch_targets(batch, loop.device),
            kind=loop.config.regression.loss,
            scale=target_scale(loop.model),
        )
    return F.binary_cross_entropy_with_logits(outputs.float(), labels)


def _regression_constraint(
    loop: _Loop,
    batch: dict[str, Any],
    attributions: torch.Tensor,
    masks: torch.Tensor,
    available: torch.Tensor,
    brain: torch.Tensor | None,
) -> torch.Tensor:
    """L_A of a regression run (``worker.ml.regression``), on relevance in standardised units."""
    config = loop.config
    temperature = config.attribution_scale * float(np.prod(attributions.shape[2:]))
    return regression_attribution_loss(
        attributions,
        _batch_targets(batch, loop.device),
        masks,
        constraints=constraints_for(config),
        scale=temperature / (_attribution_gain(loop) * target_scale(loop.model)),
        penalty=config.regression.penalty,
        zero_tolerance=config.regression.zero_tolerance,
        mass_weight=config.regression.mass_weight,
        brain_mask=brain,
        mask_available=available,
    )


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put the model in eval mode for the block, then back in train mode."""
    model.eval()
    try:
        yield
    finally:
        model.train()


@contextlib.contextmanager
def _unchanged() -> Iterator[None]:
    yield


def _mode_dependent(model: nn.Module) -> bool:
    """Whether train and eval mode compute different functions (batch norm, dropout)."""
    return any(isinstance(m, _BatchNorm | _DropoutNd) for m in model.modules())


# Under mixed precision, input gradients of a whole-volume logit (about logit / n_voxels per
# voxel) fall into float16's subnormal range; the attribution is therefore computed for
# gain * F, with the logit cast to float32 first (so gain * F cannot overflow) and gain small
# enough that the float32 -> float16 boundary of the backward (which sees gain) cannot either.
_AMP_ATTRIBUTION_GAIN = 1024.0


def _attribution_gain(loop: _Loop) -> float:
    """Factor on the explained logit inside the training attribution (1 without AMP)."""
    return _AMP_ATTRIBUTION_GAIN if loop.use_amp else 1.0


class _ScaledLogit(nn.Module):
    """``gain`` times the pathological logit ``(B,)`` of ``model``, in float32."""

    def __init__(self, model: nn.Module, gain: float) -> None:
        super().__init__()
        self.model = model
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pathological_logit(self.model(x)).float() * self.gain


def _now(device: torch.device) -> float:
    """``time.perf_counter()`` once the device finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _since(started: float, device: torch.device) -> float:
    """Seconds since ``started``, after the device finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def _batch_tensors(
    batch: dict[str, Any], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain tensors on ``device``: images ``(B, 1, *grid)``, labels ``(B,)`` float."""
    images = _plain(batch[IMAGE_KEY])
    labels = torch.as_tensor(batch[LABEL_KEY], dtype=torch.float32)
    return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


@torch.no_grad()
def _predict(loop: _Loop, dataset: CacheDataset) -> tuple[np.ndarray, np.ndarray, float]:
    """Labels, pathological probabilities and mean L_C over a dataset (eval mode)."""
    loop.model.eval()
    labels, logits = [], []
    for batch in _loader(dataset, loop.config.batch_size, shuffle=False, seed=0):
        images, batch_labels = _batch_tensors(batch, loop.device)
        with torch.autocast(
            device_type=loop.device.type, dtype=torch.float16, enabled=loop.use_amp
        ):
            batch_logits = pathological_logit(loop.model(images))
        labels.append(batch_labels)
        logits.append(batch_logits.float())
    loop.model.train()
    y = torch.cat(labels)
    z = torch.cat(logits)
    loss = float(F.binary_cross_entropy_with_logits(z, y))
    return y.cpu().numpy().astype(int), torch.sigmoid(z).cpu().numpy(), loss


@torch.no_grad()
def _predict_regression(loop: _Loop, dataset: CacheDataset) -> tuple[np.ndarray, np.ndarray, float]:
    """Targets, predicted targets and mean L_R over a dataset (eval mode)."""
    loop.model.eval()
    targets, outputs = [], []
    for batch in _loader(dataset, loop.config.batch_size, shuffle=False, seed=0):
        images, _ = _batch_tensors(batch, loop.device)
        with torch.autocast(
            device_type=loop.device.type, dtype=torch.float16, enabled=loop.use_amp
        ):
            predicted = pathological_logit(loop.model(images))
        targets.append(_batch_targets(batch, loop.device))
        outputs.append(predicted.float())
    loop.model.train()
    y, p = torch.cat(targets), torch.cat(outputs)
    loss = prediction_loss(p, y, kind=loop.config.regression.loss, scale=target_scale(loop.model))
    return y.cpu().numpy(), p.cpu().numpy(), float(loss)


def _head_metrics(loop: _Loop, dataset: CacheDataset) -> Metrics:
    """Metrics of the prediction on a split, and its loss: classification (``auroc``,
    ``accuracy``...) or regression (``mae``, ``rmse``, ``pearson``, ``spearman``)."""
    if loop.config.task == "regression":
        y, p, loss = _predict_regression(loop, dataset)
        return json_safe({**regression_metrics(y, p), "loss": loss})
    labels, probabilities, loss = _predict(loop, dataset)
    metrics: Metrics = {**classification_metrics(labels, probabilities), "loss": loss}
    logits = _logits_of(probabilities)
    offset = calibration_offset(labels, logits)
    metrics["loss_calibrated"] = _bce(labels, logits + offset)
    metrics["calibration_offset"] = offset
    return metrics


def _logits_of(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0 - 1e-12)
    return np.log(p) - np.log1p(-p)


def _bce(labels: np.ndarray, logits: np.ndarray) -> float:
    y = np.asarray(labels, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def calibration_offset(
    labels: Sequence[int] | np.ndarray, logits: Sequence[float] | np.ndarray
) -> float:
    """The constant that, added to every logit, minimises the mean BCE on these subjects.

    A constant added to the pathological logit changes no gradient, hence no attribution map
    (G, IG, EG: their completeness gap is unchanged too), but it moves every subject across
    the 0.5 threshold together. The attribution constraint tends to push all logits down
    (healthy maps must be negative, and by completeness sum(A) = F(x) - F(x')); the offset,
    chosen on the validation split, gives the decision back its threshold without touching
    the maps. 0 when the subjects hold one class only.
    """
    y = np.asarray(labels, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    if y.size == 0 or y.min() == y.max():
        return 0.0
    result = minimize_scalar(lambda c: _bce(y, z + c), bounds=(-100.0, 100.0), method="bounded")
    return float(result.x)


def _output_bias(model: nn.Module) -> torch.Tensor | None:
    """The bias of the network's last layer (a constant added to the logit), if it has one."""
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv3d | nn.Conv2d) and module.bias is not None:
            last = module
    return None if last is None else last.bias


def _calibrate(loop: _Loop, datasets: dict[str, CacheDataset]) -> float | None:
    """Fold the validation-chosen logit offset into best.pt's output bias; return it.

    ``None`` when calibration is off, the task is not classification, the validation split
    is missing or has one class, or the network has no output bias.
    """
    config = loop.config
    dataset = datasets.get("val")
    if not config.calibrate_logit or config.task != "classification" or dataset is None:
        return None
    path = loop.checkpoint_dir / BEST_CHECKPOINT
    payload = _load_payload(path, loop.device)
    loop.model.load_state_dict(payload["model"])
    labels, probabilities, _ = _predict(loop, dataset)
    if labels.min() == labels.max():
        return None
    bias = _output_bias(loop.model)
    if bias is None:
        return None
    offset = calibration_offset(labels, _logits_of(probabilities))
    with torch.no_grad():
        bias.add_(offset)
    payload["model"] = loop.model.state_dict()
    payload["logit_offset"] = offset + float(payload.get("logit_offset") or 0.0)
    _atomic_save(payload, path)
    return offset


def decode_given_target(stored: torch.Tensor) -> torch.Tensor:
    """A stored target map (0, 1, 255 = unconstrained) as float 0/1/NaN."""
    return torch.where(stored > 127.5, torch.nan, (stored > 0.5).to(torch.float32))


def with_given_targets(
    targets: torch.Tensor,
    given_maps: torch.Tensor,
    given: Any,
    brain: torch.Tensor | None,
) -> torch.Tensor:
    """Replace the targets of the subjects that came with a target map (``given`` > 0.5) by
    that map, unconstrained outside the brain when the run restricts L_A to it."""
    rows = torch.as_tensor(given).to(targets.device) > 0.5  # (B,)
    if not bool(rows.any()):
        return targets
    own = given_maps.to(targets.device, torch.float32)
    if brain is not None:
        own = torch.where(brain.to(targets.device), own, torch.nan)
    return torch.where(rows.view(-1, 1, 1, 1, 1), own, targets)


def _eval_samples(dataset: CacheDataset) -> list[tuple[torch.Tensor, torch.Tensor | None, int]]:
    """``(image, mask or None, label)`` of every subject of a (non-augmented) split."""
    samples = []
    for index in range(len(dataset)):
        item = dataset[index]
        mask = item[MASK_KEY] if float(item[MASK_AVAILABLE_KEY]) > 0.5 else None
        samples.append((item[IMAGE_KEY], mask, int(round(float(item[LABEL_KEY])))))
    return samples


def _attribution_eval(
    loop: _Loop, dataset: CacheDataset, *, steps: int, threshold: float | None = None
) -> AttributionEvaluation:
    return evaluate_attributions(
        loop.model,
        _eval_samples(dataset),
        threshold=threshold,
        steps=steps,
        top_k_percent=TOP_K_PERCENT,
        batch_size=loop.config.batch_size,
        device=loop.device,
        baseline=None if loop.baseline is None else loop.baseline[0],
    )


def _evaluate_val(loop: _Loop, dataset: CacheDataset | None) -> Metrics:
    """Validation loss, AUROC (None with one class) and accuracy; with ``val_attribution``,
    attribution metrics of IG maps (``VAL_IG_STEPS`` points) against the lesion masks."""
    regression = loop.config.task == "regression"
    if dataset is None:
        names = ("mae", "rmse", "pearson") if regression else ("auroc", "accuracy")
        return {"val_loss": None, **{f"val_{name}": None for name in names}}
    metrics = _head_metrics(loop, dataset)
    if regression:
        values: Metrics = {
            f"val_{name}": metrics.get(name) for name in ("loss", "mae", "rmse", "pearson")
        }
    else:
        values = {
            "val_loss": metrics["loss"],
            "val_auroc": metrics["auroc"],
            "val_accuracy": metrics["accuracy"],
            # The BCE after the best constant shift of the logits (see calibration_offset).
            "val_loss_calibrated": metrics.get("loss_calibrated"),
        }
    if loop.config.val_attribution:
        evaluation = _attribution_eval(loop, dataset, steps=VAL_IG_STEPS)
        found = evaluation.metrics
        values.update(
            {
                "val_attr_auroc": found["voxel_auroc"],
                "val_lesion_mass": found["lesion_mass"],
                "val_attr_threshold": evaluation.chosen_threshold,
                # At the threshold chosen on these same maps: optimistic, for monitoring.
                "val_attr_dice": found["dice_at_threshold"],
                "val_attr_dice_top5": found["dice_top_k"],
                "val_attr_healthy_share": found["healthy_share"],
                "val_attr_seconds": evaluation.seconds,
            }
        )
    return json_safe(values)


def _evaluate_test(loop: _Loop, datasets: dict[str, CacheDataset]) -> Metrics:
    """Test metrics of the best checkpoint's weights: classification, and attribution maps
    against the lesion masks with the Dice threshold chosen on the validation maps."""
    dataset = datasets.get("test")
    if dataset is None:
        return {}
    loop.check_cancel(loop.config.epochs)
    payload = _load_payload(loop.checkpoint_dir / BEST_CHECKPOINT, loop.device)
    loop.model.load_state_dict(payload["model"])
    metrics: Metrics = _head_metrics(loop, dataset)

    threshold = None
    if "val" in datasets:
        threshold = _attribution_eval(loop, datasets["val"], steps=TEST_IG_STEPS).chosen_threshold
    found = _attribution_eval(loop, dataset, steps=TEST_IG_STEPS, threshold=threshold).metrics
    metrics.update(
        {
            "attr_dice": found["dice_at_threshold"],
            "attr_dice_top5": found["dice_top_k"],
            "attr_voxel_auroc": found["voxel_auroc"],
            "attr_voxel_auprc": found["voxel_auprc"],
            "attr_lesion_mass": found["lesion_mass"],
            "attr_pointing_game": found["pointing_game"],
            "attr_healthy_share": found["healthy_share"],
            "attr_lesion_positive": found["lesion_positive"],
            "attr_threshold": threshold,
            "attr_ig_delta": found["ig_delta_abs_mean"],
            "attr_n_pathological": found["n_pathological"],
            "attr_n_healthy": found["n_healthy"],
        }
    )
    return json_safe(metrics)


def _monitor_score(name: str, metrics: Metrics) -> float | None:
    """Higher-is-better score of the early-stopping metric.

    Falls back to the validation loss when the metric is undefined (a validation set with
    one class has no AUROC), and to None without a validation set.
    """
    found = _monitor(name, metrics)
    return None if found is None else found[0]


def _monitor(name: str, metrics: Metrics) -> tuple[float, str] | None:
    """``(higher-is-better score, the metric it is of)``: ``name``, else ``val_loss``."""
    for key in (name, "val_loss"):
        value = metrics.get(key)
        if value is not None:
            score = value if _HIGHER_IS_BETTER[key] else -value
            calibrated = metrics.get("val_loss_calibrated")
            if key in _TIED_OFTEN and calibrated is not None:
                # AUROC and accuracy on a few dozen subjects tie often (many epochs at 1.0):
                # the ties go to the epoch whose calibrated validation loss is lowest.
                score -= _TIE_BREAK * float(calibrated)
            return score, key
    return None


def _selection(name: str, metrics: Metrics) -> tuple[int, float, str] | None:
    """How an epoch ranks for ``best.pt``: ``(tier, score, metric)``, compared by tier first.

    An attribution metric (``val_attr_auroc``, ``val_lesion_mass``, ``val_attr_dice``) says
    nothing while the classifier has not learned: its maps are then noise, and the metric's
    best epoch is arbitrary. So an epoch whose ``val_auroc`` is below ``CLASSIFICATION_FLOOR``
    is ranked in tier 0 by its ``val_auroc``, below every epoch of tier 1 (classification
    works) ranked by the attribution metric. Where ``val_auroc`` is undefined (one class in
    the validation split) the classifier cannot be judged and the epoch stays in tier 1. Other
    early-stopping metrics are always tier 1. ``None`` without a validation split.
    """
    if name in _ATTRIBUTION_MONITORS:
        auroc = metrics.get("val_auroc")
        if auroc is not None and auroc < CLASSIFICATION_FLOOR:
            return 0, auroc, "val_auroc"
    found = _monitor(name, metrics)
    return None if found is None else (1, *found)


def _update_best(config: RunConfig, state: _State, metrics: Metrics) -> bool:
    """Update best score and patience counter; return whether this epoch is the new best.

    Epochs are ranked by ``_selection``; the metric that ranked the best one is kept in
    ``state.best_metric``.
    """
    found = _selection(config.early_stopping_metric, metrics)
    # Without a score (no validation split) the latest weights are the best we know.
    improved = (
        found is None
        or state.best_score is None
        or (found[0], found[1]) > (state.best_tier, state.best_score)
    )
    if improved:
        state.best_tier, state.best_score, state.best_metric = found or (1, None, None)
        state.best_epoch = state.epoch
        state.bad_epochs = 0
    else:
        state.bad_epochs += 1
    return improved


def _patience_exhausted(config: RunConfig, state: _State) -> bool:
    patience = config.early_stopping_patience
    return patience is not None and state.bad_epochs >= patience


# --------------------------------------------------------------------------- predictions


@torch.no_grad()
def predict_subjects(
    loop: _Loop, datasets: dict[str, CacheDataset], subjects: Sequence[SubjectSample]
) -> list[SubjectPrediction]:
    """Predict every subject of every split with the weights of ``best.pt``.

    Classification runs only (a regression or segmentation run returns ``[]``). The training
    split is predicted without augmentation (its datasets are rebuilt without it when the run
    augments). The items of the cached datasets are matched to their subjects by image path.
    The rows are also written to ``checkpoint_dir/predictions.csv`` (subject_id, split, site,
    label, logit, probability), so an experiment without the platform's database has them.

    Args:
        loop: The run's loop; its model gets the weights of ``best.pt``.
        datasets: The splits' cached datasets, as ``_build_datasets`` made them.
        subjects: The run's subjects.

    Returns:
        One ``SubjectPrediction`` per subject of ``datasets``, split by split.
    """
    best = loop.checkpoint_dir / BEST_CHECKPOINT
    if loop.config.task != "classification" or not best.exists():
        return []
    loop.check_cancel(loop.config.epochs)
    loop.model.load_state_dict(_load_payload(best, loop.device)["model"])
    if loop.config.augment and "train" in datasets:
        plain = loop.config.model_copy(update={"augment": False})
        train = [s for s in subjects if s.split == "train"]
        datasets = {**datasets, "train": _build_datasets(plain, train)["train"]}
    by_image = {str(s.image): s for s in subjects}
    rows: list[SubjectPrediction] = []
    splits: tuple[Split, ...] = ("train", "val", "test")
    for split in splits:
        dataset = datasets.get(split)
        if dataset is None:
            continue
        in_split = [s for s in subjects if s.split == split]
        logits = _predict_logits(loop, dataset)
        for index, logit in enumerate(logits):
            item = dataset.data[index]
            found = by_image.get(str(item.get(IMAGE_KEY))) if isinstance(item, dict) else None
            subject = found if found is not None else in_split[index]
            rows.append(
                SubjectPrediction(
                    subject_id=subject.subject_id,
                    split=split,
                    label=int(subject.label),
                    logit=float(logit),
                    probability=float(torch.sigmoid(torch.tensor(float(logit)))),
                    site=subject.site,
                )
            )
    _write_predictions(rows, loop.checkpoint_dir / PREDICTIONS_FILE)
    return rows


def _predict_logits(loop: _Loop, dataset: CacheDataset) -> list[float]:
    """Pathological logits of a dataset's items in order (eval mode, batches of the run's
    batch size)."""
    loop.model.eval()
    logits: list[float] = []
    try:
        for batch in _loader(dataset, loop.config.batch_size, shuffle=False, seed=0):
            images, _ = _batch_tensors(batch, loop.device)
            with torch.autocast(
                device_type=loop.device.type, dtype=torch.float16, enabled=loop.use_amp
            ):
                batch_logits = pathological_logit(loop.model(images))
            logits.extend(float(v) for v in batch_logits.float().cpu())
    finally:
        loop.model.train()
    return logits


def _write_predictions(rows: Sequence[SubjectPrediction], path: Path) -> None:
    """``predictions.csv`` of ``rows``, written under a temporary name and renamed."""
    import csv

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["subject_id", "split", "site", "label", "logit", "probability"])
            for r in rows:
                writer.writerow(
                    [
                        r.subject_id,
                        r.split,
                        r.site or "",
                        r.label,
                        repr(r.logit),
                        repr(r.probability),
                    ]
                )
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- checkpoints


def _last_payload(loop: _Loop, state: _State) -> dict[str, Any]:
    """Everything needed to resume after ``state.epoch``."""
    return {
        "format": CHECKPOINT_FORMAT,
        "kind": "last",
        "config": loop.config.model_dump(mode="json"),
        "epoch": state.epoch,
        "subjects": loop.fingerprint,
        "model": loop.model.state_dict(),
        "optimizer": loop.optimizer.state_dict(),
        "scaler": loop.scaler.state_dict(),
        "balancer": loop.balancer.state_dict(),
        "history": state.history,
        "best_score": state.best_score,
        "best_epoch": state.best_epoch,
        "bad_epochs": state.bad_epochs,
        "best_tier": state.best_tier,
        "best_metric": state.best_metric,
        "rng": _get_rng_state(),
    }


def _best_payload(loop: _Loop, state: _State) -> dict[str, Any]:
    """The weights worth keeping, with the config that rebuilds the network."""
    return {
        "format": CHECKPOINT_FORMAT,
        "kind": "best",
        "config": loop.config.model_dump(mode="json"),
        "epoch": state.epoch,
        "model": loop.model.state_dict(),
        "metrics": state.history[-1],
        # The IG reference of the run's maps (attribution_baseline "healthy"), or None.
        "baseline": None if loop.baseline is None else loop.baseline[0].detach().cpu(),
    }


def _atomic_save(payload: dict[str, Any], path: Path) -> None:
    """Write a checkpoint so that ``path`` is always either the old or the new file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _load_payload(path: Path, device: str | torch.device) -> dict[str, Any]:
    """Load a checkpoint without executing pickled code."""
    payload = torch.load(path, map_location=device, weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(f"{path}: unknown checkpoint format {payload.get('format')}")
    return payload


def _resume(loop: _Loop) -> tuple[_State, dict[str, Any] | None]:
    """Load last.pt into the loop if present; return the state and the stored RNG state."""
    path = loop.checkpoint_dir / LAST_CHECKPOINT
    if not path.exists():
        return _State(), None
    payload = _load_payload(path, loop.device)
    _check_compatible(RunConfig.model_validate(payload["config"]), loop.config, path)
    if payload["subjects"] != loop.fingerprint:
        raise CheckpointMismatchError(
            f"{path} was written for other subjects (ids, labels or splits differ); "
            "remove it to start over"
        )
    loop.model.load_state_dict(payload["model"])
    loop.optimizer.load_state_dict(payload["optimizer"])
    if loop.use_amp and payload["scaler"]:
        loop.scaler.load_state_dict(payload["scaler"])
    loop.balancer.load_state_dict(payload.get("balancer"))
    state = _State(
        epoch=int(payload["epoch"]),
        history=list(payload["history"]),
        best_score=payload["best_score"],
        best_epoch=int(payload["best_epoch"]),
        bad_epochs=int(payload["bad_epochs"]),
        # A last.pt from before the classification fallback: every epoch was tier 1.
        best_tier=int(payload.get("best_tier", 1)),
        best_metric=payload.get("best_metric"),
    )
    return state, payload["rng"]


def _check_compatible(stored: RunConfig, current: RunConfig, path: Path) -> None:
    """Refuse to resume a checkpoint that a different run wrote."""
    changed = sorted(
        name
        for name in RunConfig.model_fields
        if name not in _RESUMABLE_CHANGES and getattr(stored, name) != getattr(current, name)
    )
    if changed:
        raise CheckpointMismatchError(
            f"{path} was written with a different configuration ({', '.join(changed)}); "
            "remove it to start over"
        )


def _get_rng_state() -> dict[str, Any]:
    """Every global RNG state, as tensors and plain values (safe for weights_only loading)."""
    # legacy=True always yields the (name, keys, pos, has_gauss, cached) tuple.
    name, keys, pos, has_gauss, cached = cast(tuple, np.random.get_state(legacy=True))
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states saved by ``_get_rng_state``."""
    torch.set_rng_state(state["torch"].cpu())
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].cpu().numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        # A checkpoint from a machine with more GPUs restores only the devices present.
        cuda_states = [s.cpu() for s in state["cuda"]][: torch.cuda.device_count()]
        for index, cuda_state in enumerate(cuda_states):
            torch.cuda.set_rng_state(cuda_state, device=index)


def _as_tuple(value: Any) -> Any:
    """Turn nested lists back into the tuples ``random.setstate`` requires."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuple(v) for v in value)
    return value
