"""The training engine: the run of every task, with the task-specific parts in a ``Task``.

``run`` owns what every run shares: device and mixed precision, the optimiser, seeded epochs
and data loaders, cancellation (between steps and inside them), progress events, model
selection and early stopping (``worker.ml.training.selection``), checkpoints and resumption
(``worker.ml.training.checkpoints``). Everything that depends on what is learned (the
network, the subjects it needs, the step with its head and attribution losses, the metrics,
the test phase) comes from the ``Task`` (``worker.ml.training.task``).

``run`` is safe to call again after the process was killed: it finds ``checkpoint_dir/last.pt``
and continues with the next epoch, reproducing the run it interrupted (weights, optimiser,
RNG states and per-epoch data order are all restored).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from monai.data import CacheDataset, DataLoader
from monai.utils import set_determinism
from torch import nn

from attrivue_core.configs import RunConfig
from worker.ml.evaluation import json_safe
from worker.ml.gradients import GradientBalancer
from worker.ml.training.cancel import cancel_checks
from worker.ml.training.checkpoints import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    atomic_save,
    best_payload,
    fingerprint,
    last_payload,
    resume,
    set_rng_state,
)
from worker.ml.training.data import epoch_seed, fit_normative, make_loader
from worker.ml.training.datatypes import (
    Metrics,
    ProgressEvent,
    StepStats,
    SubjectSample,
    TrainResult,
)
from worker.ml.training.loop import Loop, RunState
from worker.ml.training.selection import patience_exhausted, update_best
from worker.ml.training.task import Task

__all__ = [
    "build_optimizer",
    "epoch_learning_rate",
    "finish",
    "run",
    "run_epochs",
    "select_device",
    "train_epoch",
]


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


def run(
    task: Task,
    config: RunConfig,
    subjects: Sequence[SubjectSample],
    *,
    checkpoint_dir: Path,
    progress: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``task``'s network on the ``train`` split, validating every epoch; see
    ``worker.ml.training.train`` for the contract."""
    task.validate(config, subjects)
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
            stacklevel=3,
        )
    set_determinism(seed=config.seed)

    model = task.build_model(config, subjects).to(device)
    loop = Loop(
        config=config,
        model=model,
        optimizer=build_optimizer(config, model),
        scaler=torch.amp.GradScaler(device.type, enabled=use_amp),
        device=device,
        use_amp=use_amp,
        checkpoint_dir=checkpoint_dir,
        fingerprint=fingerprint(subjects, with_targets=task.fingerprint_targets),
        progress=progress,
        should_stop=should_stop,
        balancer=GradientBalancer(config),
    )
    state, rng_state = resume(loop)
    resumed_from = state.epoch if rng_state is not None else None

    datasets = task.build_datasets(config, subjects)
    fit_normative(model, config, subjects, datasets)
    loop.references, loop.baseline = task.references(config, subjects, datasets, device)
    task.prepare(loop, subjects, datasets)
    if rng_state is not None:
        # Restored after the datasets are built so the RNG continues exactly where the
        # interrupted run left it at the end of its last completed epoch.
        set_rng_state(rng_state)
    with cancel_checks(model, should_stop, what="a training step"):
        run_epochs(task, loop, state, datasets)
        test_metrics, predictions = task.conclude(loop, datasets, subjects)
    result = finish(loop, state, test_metrics, checkpoint_dir, resumed_from)
    result.predictions = predictions
    return result


def finish(
    loop: Loop,
    state: RunState,
    test_metrics: Metrics,
    checkpoint_dir: Path,
    resumed_from: int | None,
) -> TrainResult:
    """Send the ``done`` event and describe the finished run."""
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
        stopped_early=patience_exhausted(config, state) and state.epoch < config.epochs,
        best_metric=state.best_metric,
    )


def build_optimizer(config: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Create the optimiser named in the config."""
    params = model.parameters()
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.learning_rate, momentum=0.9, weight_decay=config.weight_decay
    )


def epoch_learning_rate(config: RunConfig, epoch: int) -> float:
    """The step size of ``epoch`` (1-based) under ``config.lr_schedule``."""
    if config.lr_schedule == "constant":
        return config.learning_rate
    return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / config.epochs))


def run_epochs(task: Task, loop: Loop, state: RunState, datasets: dict[str, CacheDataset]) -> None:
    """Train from ``state.epoch + 1`` to ``config.epochs`` or until patience runs out."""
    config = loop.config
    while state.epoch < config.epochs and not patience_exhausted(config, state):
        epoch = state.epoch + 1
        for group in loop.optimizer.param_groups:
            group["lr"] = epoch_learning_rate(config, epoch)
        seed = epoch_seed(config.seed, epoch)
        train_loader = make_loader(datasets["train"], config.batch_size, shuffle=True, seed=seed)
        epoch_start = time.monotonic()
        summary = train_epoch(task, loop, train_loader, epoch)
        task.after_train_epoch(loop, state.history)
        loop.check_cancel(epoch)
        val_metrics = task.evaluate_val(loop, datasets.get("val"))
        record = json_safe(
            {
                "epoch": epoch,
                **task.train_record(loop, summary),
                **val_metrics,
                "learning_rate": float(loop.optimizer.param_groups[0]["lr"]),
                "seconds": time.monotonic() - epoch_start,
            }
        )
        state.epoch = epoch
        state.history.append(record)
        improved = update_best(config, state, val_metrics, metric=task.selection_metric(config))
        # best.pt before last.pt: if the process dies in between, last.pt still points at
        # the previous epoch, which is redone and rewrites best.pt identically.
        if improved:
            atomic_save(best_payload(loop, state), loop.checkpoint_dir / BEST_CHECKPOINT)
        atomic_save(last_payload(loop, state), loop.checkpoint_dir / LAST_CHECKPOINT)
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


def train_epoch(task: Task, loop: Loop, loader: DataLoader, epoch: int) -> StepStats:
    """Run one epoch of optimisation; return the task's summary of its steps."""
    loop.model.train()
    steps = len(loader)
    config = loop.config
    # EG draws its references from a generator of its own, seeded per epoch, so a resumed run
    # draws what the interrupted one would have.
    generator = torch.Generator().manual_seed(epoch_seed(config.seed, epoch, stream=1))
    records: list[StepStats] = []
    for step, batch in enumerate(loader, start=1):
        loop.check_cancel(epoch)
        stats = task.train_step(
            loop, batch, epoch=epoch, step=step, steps=steps, generator=generator
        )
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
    return task.summarize(records)
