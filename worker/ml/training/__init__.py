"""Training of the platform's networks: classification and regression with the attribution
constraint, and segmentation (docs/method.md sections 3 and 6).

``train`` runs the engine (``worker.ml.training.engine``: epochs, loaders, cancellation,
progress, model selection and early stopping, checkpoints and resumption) with the ``Task``
(``worker.ml.training.task``) of ``RunConfig.task``:

- ``classification`` (``worker.ml.training.classification``): BCE of the pathological logit
  (L_C) and L_A against target maps from labels and lesion masks;
- ``regression`` (``worker.ml.training.regression``): L_R of a continuous target and the
  regression constraint (``worker.ml.regression``);
- ``segmentation`` (``worker.ml.training.segmentation``): Dice + CE of a UNet with mixed
  supervision (``worker.ml.segmentation``).

Classification and regression share ``worker.ml.training.constrained`` (the double
back-propagation step, gradient balancing, AMP's attribution gain, attribution metrics).

``train`` is safe to call again after the process was killed: it finds
``checkpoint_dir/last.pt`` and continues with the next epoch (``worker.ml.training.checkpoints``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from attrivue_core.configs import RunConfig
from worker.ml.regression import build_model
from worker.ml.training.cancel import CANCEL_POLL_SECONDS, TrainingCancelled, cancel_checks
from worker.ml.training.checkpoints import (
    BEST_CHECKPOINT,
    CHECKPOINT_FORMAT,
    LAST_CHECKPOINT,
    load_baseline,
    load_model,
)
from worker.ml.training.classification import (
    ClassificationTask,
    calibration_offset,
    classification_metrics,
    predict_subjects,
)
from worker.ml.training.data import decode_given_target, with_given_targets
from worker.ml.training.datatypes import (
    LABEL_KEY,
    PREDICTIONS_FILE,
    TEST_IG_STEPS,
    TOP_K_PERCENT,
    VAL_IG_STEPS,
    CheckpointMismatchError,
    ProgressEvent,
    SubjectPrediction,
    SubjectSample,
    TrainResult,
    as_split,
)
from worker.ml.training.engine import run, select_device
from worker.ml.training.regression import RegressionTask
from worker.ml.training.segmentation import SegmentationTask
from worker.ml.training.selection import CLASSIFICATION_FLOOR
from worker.ml.training.task import Task

__all__ = [
    "BEST_CHECKPOINT",
    "CANCEL_POLL_SECONDS",
    "CHECKPOINT_FORMAT",
    "CLASSIFICATION_FLOOR",
    "LABEL_KEY",
    "LAST_CHECKPOINT",
    "PREDICTIONS_FILE",
    "TASKS",
    "TEST_IG_STEPS",
    "TOP_K_PERCENT",
    "VAL_IG_STEPS",
    "CheckpointMismatchError",
    "ProgressEvent",
    "SubjectPrediction",
    "SubjectSample",
    "Task",
    "TrainResult",
    "TrainingCancelled",
    "as_split",
    "build_model",
    "calibration_offset",
    "cancel_checks",
    "classification_metrics",
    "decode_given_target",
    "load_baseline",
    "load_model",
    "predict_subjects",
    "select_device",
    "task_for",
    "train",
    "with_given_targets",
]

# The task of each ``RunConfig.task``.
TASKS: dict[str, Callable[[], Task]] = {
    "classification": ClassificationTask,
    "regression": RegressionTask,
    "segmentation": SegmentationTask,
}


def task_for(config: RunConfig) -> Task:
    """A fresh ``Task`` for ``config.task``."""
    return TASKS[config.task]()


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
    the weights of ``best.pt`` at the end, with the task's metrics (classification and
    regression: also attribution metrics, whose Dice threshold is chosen on the validation
    split).

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
    return run(
        task_for(config),
        config,
        subjects,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        should_stop=should_stop,
    )
