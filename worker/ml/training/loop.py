"""What one training call works with (``Loop``), its bookkeeping (``RunState``), and the small
helpers every task's step uses: timing on the device and epoch means."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attrivue_core.configs import RunConfig
from worker.ml.gradients import GradientBalancer
from worker.ml.training.cancel import TrainingCancelled
from worker.ml.training.datatypes import ProgressEvent

__all__ = ["Loop", "RunState", "mean_or_none", "now", "since", "sum_or_none"]


@dataclass
class RunState:
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
class Loop:
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


def now(device: torch.device) -> float:
    """``time.perf_counter()`` once the device finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def since(started: float, device: torch.device) -> float:
    """Seconds since ``started``, after the device finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def mean_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def sum_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.sum(present)) if present else None
