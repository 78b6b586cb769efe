"""The Task: everything a training run does that depends on what is learned.

The engine (``worker.ml.training.engine``) owns the run: device and AMP, optimiser, seeded
epochs and loaders, cancellation, progress events, model selection and early stopping,
checkpoints and resumption. It asks its ``Task`` for the rest, through the hooks below, in
the spirit of MONAI's ``SupervisedTrainer`` variants that override only ``_iteration``:

- ``validate``, ``build_model``, ``build_datasets``, ``references``: setting up;
- ``train_step`` (head loss, attribution loss, backward and optimiser step) and
  ``summarize``, ``train_record``: one optimisation step, and the epoch's means;
- ``evaluate_val``: validation metrics, from which ``selection_metric`` picks ``best.pt``;
- ``conclude``: after the last epoch, test metrics and per-subject predictions.

Tasks: ``classification``, ``regression`` (both on ``worker.ml.training.constrained``) and
``segmentation``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import torch
from monai.data import CacheDataset
from torch import nn

from attrivue_core.configs import RunConfig
from worker.ml.training.datatypes import Metrics, StepStats, SubjectPrediction, SubjectSample
from worker.ml.training.loop import Loop

__all__ = ["Task"]


class Task(abc.ABC):
    """What the engine asks of a task (one instance per ``train`` call)."""

    #: ``RunConfig.task`` this task trains.
    name: str
    #: Whether the subjects' targets belong to the data fingerprint stored in last.pt.
    fingerprint_targets: bool = False

    @abc.abstractmethod
    def validate(self, config: RunConfig, subjects: Sequence[SubjectSample]) -> None:
        """Reject subjects (or targets) this task cannot train on, before any work is done."""

    @abc.abstractmethod
    def build_model(self, config: RunConfig, subjects: Sequence[SubjectSample]) -> nn.Module:
        """The freshly initialised network of the run."""

    @abc.abstractmethod
    def build_datasets(
        self, config: RunConfig, subjects: Sequence[SubjectSample]
    ) -> dict[str, CacheDataset]:
        """The cached splits (``worker.ml.training.data.cached_splits``)."""

    def references(
        self,
        config: RunConfig,
        subjects: Sequence[SubjectSample],
        datasets: dict[str, CacheDataset],
        device: torch.device,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Attribution references and baseline (``Loop.references``, ``Loop.baseline``)."""
        return None, None

    def prepare(
        self,
        loop: Loop,
        subjects: Sequence[SubjectSample],
        datasets: dict[str, CacheDataset],
    ) -> None:
        """Whatever the task needs from the data before the first epoch (default: nothing)."""
        return None

    def after_train_epoch(self, loop: Loop, history: Sequence[dict[str, Any]]) -> None:
        """Called after each epoch's training steps, before its validation, with the records of
        the epochs before it (default: nothing)."""
        return None

    @abc.abstractmethod
    def train_step(
        self,
        loop: Loop,
        batch: dict[str, Any],
        *,
        epoch: int,
        step: int,
        steps: int,
        generator: torch.Generator,
    ) -> StepStats:
        """One optimisation step on ``batch`` (1-based ``step`` of ``steps`` in ``epoch``)."""

    @abc.abstractmethod
    def summarize(self, records: Sequence[StepStats]) -> StepStats:
        """The epoch's statistics from those of its steps."""

    @abc.abstractmethod
    def train_record(self, loop: Loop, summary: StepStats) -> dict[str, Any]:
        """The training keys of the epoch's history record (before the validation metrics)."""

    @abc.abstractmethod
    def evaluate_val(self, loop: Loop, dataset: CacheDataset | None) -> Metrics:
        """Validation metrics of the current weights (``val_...``; ``None`` values without a
        validation split)."""

    def selection_metric(self, config: RunConfig) -> str:
        """The validation metric that ranks epochs for ``best.pt``."""
        return config.early_stopping_metric

    @abc.abstractmethod
    def conclude(
        self,
        loop: Loop,
        datasets: dict[str, CacheDataset],
        subjects: Sequence[SubjectSample],
    ) -> tuple[Metrics, list[SubjectPrediction]]:
        """After the last epoch: test metrics of ``best.pt`` and per-subject predictions."""
