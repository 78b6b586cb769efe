"""Tests of training: learning a toy task, progress, checkpoints, resumption, cancellation."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from attrivue_core.configs import RunConfig
from worker.ml.training import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    CheckpointMismatchError,
    ProgressEvent,
    SubjectSample,
    TrainingCancelled,
    as_split,
    classification_metrics,
    load_model,
    train,
)

GRID = (16, 20, 16)
NATIVE_SHAPE = (18, 22, 18)
NATIVE_AFFINE = np.diag([1.1, 1.0, 1.2, 1.0])
SPLITS = {"train": 32, "val": 16, "test": 8}


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    # Tiny volumes gain nothing from intra-op threads, and on a shared 2-core machine
    # spinning OpenMP threads make the tests several times slower under load.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _toy_volume(rng: np.random.Generator, pathological: bool) -> np.ndarray:
    """An ellipsoidal 'brain' with noise; pathological subjects get one bright blob."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in NATIVE_SHAPE], indexing="ij"))
    brain = (grid**2).sum(axis=0) < 0.8
    volume = brain * (1.0 + 0.1 * rng.standard_normal(NATIVE_SHAPE))
    if pathological:
        centre = rng.uniform(-0.35, 0.35, size=3)
        blob = ((grid - centre[:, None, None, None]) ** 2).sum(axis=0) < 0.3**2
        volume = volume + 2.0 * blob
    return volume.astype(np.float32)


@pytest.fixture(scope="module")
def toy_subjects(tmp_path_factory: pytest.TempPathFactory) -> list[SubjectSample]:
    """Balanced splits of toy subjects written as NIfTI files."""
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(7)
    subjects = []
    for split, count in SPLITS.items():
        for index in range(count):
            label = index % 2
            path = root / f"{split}_{index}.nii.gz"
            nib.save(nib.Nifti1Image(_toy_volume(rng, bool(label)), NATIVE_AFFINE), path)
            subjects.append(SubjectSample(f"{split}{index}", path, None, label, split))
    return subjects


def _config(**overrides) -> RunConfig:
    values = {
        "grid": GRID,
        "epochs": 4,
        "batch_size": 4,
        "learning_rate": 3e-3,
        "device": "cpu",
        "seed": 0,
    }
    return RunConfig(**{**values, **overrides})


def test_learns_toy_task_reports_progress_and_writes_checkpoints(
    toy_subjects: list[SubjectSample], tmp_path: Path
) -> None:
    events: list[ProgressEvent] = []
    result = train(_config(), toy_subjects, checkpoint_dir=tmp_path, progress=events.append)

    assert result.resumed_from_epoch is None
    assert result.epochs_completed == 4
    assert len(result.history) == 4
    assert result.history[-1]["val_auroc"] > 0.8
    assert result.test_metrics["auroc"] is not None
    assert set(result.test_metrics) >= {
        "auroc",
        "accuracy",
        "balanced_accuracy",
        "sensitivity",
        "specificity",
        # Attribution metrics are reported for every setting; these subjects have no masks.
        "attr_lesion_mass",
        "attr_healthy_share",
    }
    assert result.test_metrics["attr_lesion_mass"] is None
    assert 0.0 <= result.test_metrics["attr_healthy_share"] <= 1.0

    steps = [e for e in events if e.kind == "step"]
    epochs = [e for e in events if e.kind == "epoch"]
    assert len(steps) == 4 * SPLITS["train"] // 4
    assert [e.epoch for e in epochs] == [1, 2, 3, 4]
    assert all(math.isfinite(e.grad_norm_c) and e.grad_norm_c > 0 for e in steps)
    assert all(math.isfinite(e.loss_c) for e in steps)
    # lc_only has no attribution term; its steps still report their duration.
    # L_C only trains no L_A; its first batch of each epoch probes it (grad_probe_batches=1).
    assert all(e.lambda_a is None for e in steps)
    assert all((e.loss_a is None) == (e.step > 1) for e in steps)
    assert all((e.grad_norm_a is None) == (e.step > 1) for e in steps)
    assert all(e.step_seconds is not None and e.step_seconds > 0 for e in steps)
    assert all(0 < e.fraction <= 1 for e in events)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions)
    assert events[-1].kind == "done" and events[-1].fraction == 1.0
    assert "val_auroc" in epochs[-1].metrics

    assert result.last_checkpoint == tmp_path / LAST_CHECKPOINT
    assert result.best_checkpoint == tmp_path / BEST_CHECKPOINT
    assert result.last_checkpoint.exists() and result.best_checkpoint.exists()
    assert not list(tmp_path.glob("*.tmp"))
    model, config = load_model(result.best_checkpoint)
    assert config == _config()
    assert not model.training
    assert model(torch.zeros(2, 1, *GRID)).shape == (2,)


def test_resume_continues_from_last_epoch_and_matches_an_uninterrupted_run(
    toy_subjects: list[SubjectSample], tmp_path: Path
) -> None:
    straight = train(_config(epochs=3), toy_subjects, checkpoint_dir=tmp_path / "straight")

    first = train(_config(epochs=2), toy_subjects, checkpoint_dir=tmp_path / "resumed")
    events: list[ProgressEvent] = []
    second = train(
        _config(epochs=3), toy_subjects, checkpoint_dir=tmp_path / "resumed", progress=events.append
    )

    assert first.resumed_from_epoch is None
    assert second.resumed_from_epoch == 2
    assert second.epochs_completed == 3
    assert {e.epoch for e in events if e.kind == "step"} == {3}
    assert [h["epoch"] for h in second.history] == [1, 2, 3]
    # Weights, optimiser, RNG and data order are restored: the same numbers as without a break.
    for resumed, uninterrupted in zip(second.history, straight.history, strict=True):
        assert resumed["train_loss_c"] == pytest.approx(uninterrupted["train_loss_c"], rel=1e-5)
        assert resumed["val_loss"] == pytest.approx(uninterrupted["val_loss"], rel=1e-5)

    # A re-delivered job whose training already finished only re-evaluates.
    again = train(_config(epochs=3), toy_subjects, checkpoint_dir=tmp_path / "resumed")
    assert again.resumed_from_epoch == 3
    assert again.epochs_completed == 3


def test_resume_refuses_a_checkpoint_of_another_configuration(
    toy_subjects: list[SubjectSample], tmp_path: Path
) -> None:
    train_only = [s for s in toy_subjects if s.split == "train"][:8]
    train(_config(epochs=1), train_only, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatchError, match="learning_rate"):
        train(_config(epochs=2, learning_rate=1e-2), train_only, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatchError, match="other subjects"):
        train(_config(epochs=2), train_only[:6], checkpoint_dir=tmp_path)


def test_should_stop_cancels_without_touching_the_last_checkpoint(
    toy_subjects: list[SubjectSample], tmp_path: Path
) -> None:
    steps_seen: list[ProgressEvent] = []

    def should_stop() -> bool:
        # Stop in the middle of the second epoch.
        return len(steps_seen) >= SPLITS["train"] // 4 + 2

    with pytest.raises(TrainingCancelled):
        train(
            _config(epochs=3),
            toy_subjects,
            checkpoint_dir=tmp_path,
            progress=lambda e: steps_seen.append(e) if e.kind == "step" else None,
            should_stop=should_stop,
        )
    stored = torch.load(tmp_path / LAST_CHECKPOINT, weights_only=True)
    assert stored["epoch"] == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_early_stopping_with_augmentation_keeps_the_best_epoch(
    toy_subjects: list[SubjectSample], tmp_path: Path
) -> None:
    config = _config(epochs=8, augment=True, early_stopping_patience=1)
    result = train(config, toy_subjects, checkpoint_dir=tmp_path)

    # The best epoch has the highest validation AUROC; ties (the toy task saturates it) go
    # to the lowest calibrated validation loss. Patience 1 stops one epoch after it.
    def rank(h: dict) -> tuple[float, float]:
        return (h["val_auroc"], -h["val_loss_calibrated"])

    best_record = result.history[result.best_epoch - 1]
    assert all(rank(best_record) >= rank(h) for h in result.history)
    if result.stopped_early:
        assert result.epochs_completed == result.best_epoch + 1 == len(result.history)
    else:
        assert result.epochs_completed == 8
    best = torch.load(result.best_checkpoint, weights_only=True)
    assert best["epoch"] == result.best_epoch


def test_rejects_unusable_subject_lists(tmp_path: Path) -> None:
    image = tmp_path / "x.nii.gz"
    with pytest.raises(ValueError, match="train"):
        train(_config(), [SubjectSample(1, image, None, 0, "val")], checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="0 or 1"):
        train(_config(), [SubjectSample(1, image, None, 2, "train")], checkpoint_dir=tmp_path)


def test_classification_metrics_are_sign_aware_and_none_when_undefined() -> None:
    metrics = classification_metrics([0, 0, 1, 1], [0.1, 0.6, 0.7, 0.9])
    assert metrics["auroc"] == 1.0
    assert metrics["accuracy"] == 0.75
    assert metrics["sensitivity"] == 1.0
    assert metrics["specificity"] == 0.5
    assert metrics["balanced_accuracy"] == 0.75
    one_class = classification_metrics([1, 1], [0.2, 0.9])
    assert one_class["auroc"] is None and one_class["specificity"] is None
    assert one_class["sensitivity"] == 0.5


def test_item5_cancel_stops_inside_a_running_step(
    toy_subjects: list[SubjectSample], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel asked while a step runs stops it at its next forward pass (here: the chunks
    of Integrated Gradients inside the attribution loss), not after the step: no step ends."""
    import worker.ml.training.cancel as training

    monkeypatch.setattr(training, "CANCEL_POLL_SECONDS", 0.0, raising=False)
    calls: list[int] = []
    steps: list[ProgressEvent] = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 1  # the check before step 1 passes; the next one is inside it

    with pytest.raises(TrainingCancelled, match="during a training step"):
        train(
            _config(
                epochs=1,
                loss_setting="lc_la_unsupervised",
                train_attribution=["integrated_gradients"],
                ig_steps=4,
            ),
            toy_subjects,
            checkpoint_dir=tmp_path,
            progress=lambda e: steps.append(e) if e.kind == "step" else None,
            should_stop=should_stop,
        )
    assert steps == [], "a step finished after the cancel"
    assert not (tmp_path / LAST_CHECKPOINT).exists()


def test_as_split_checks_a_split_read_as_text() -> None:
    assert [as_split(s) for s in ("train", "val", "test")] == ["train", "val", "test"]
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        as_split("validation")


def test_cosine_schedule_sets_each_epochs_step_size_and_survives_a_resume(
    toy_subjects: list[SubjectSample], tmp_path: Path
) -> None:
    config = _config(epochs=3, lr_schedule="cosine")
    straight = train(config, toy_subjects, checkpoint_dir=tmp_path / "straight")
    expected = [3e-3 * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in range(3)]
    assert [h["learning_rate"] for h in straight.history] == pytest.approx(expected)
    assert expected[0] == pytest.approx(3e-3) and expected[2] == pytest.approx(7.5e-4)

    # Interrupted in the middle of epoch 2, then resumed: the schedule follows the epoch
    # number, so the resumed epochs take the same step sizes and reach the same numbers.
    steps_seen: list[ProgressEvent] = []
    with pytest.raises(TrainingCancelled):
        train(
            config,
            toy_subjects,
            checkpoint_dir=tmp_path / "resumed",
            progress=lambda e: steps_seen.append(e) if e.kind == "step" else None,
            should_stop=lambda: len(steps_seen) >= SPLITS["train"] // 4 + 2,
        )
    resumed = train(config, toy_subjects, checkpoint_dir=tmp_path / "resumed")
    assert resumed.resumed_from_epoch == 1
    for again, uninterrupted in zip(resumed.history, straight.history, strict=True):
        assert again["learning_rate"] == pytest.approx(uninterrupted["learning_rate"])
        assert again["train_loss_c"] == pytest.approx(uninterrupted["train_loss_c"], rel=1e-5)
        assert again["val_loss"] == pytest.approx(uninterrupted["val_loss"], rel=1e-5)


def test_constant_schedule_keeps_the_step_size(
    toy_subjects: list[SubjectSample], tmp_path: Path
) -> None:
    result = train(_config(epochs=2), toy_subjects, checkpoint_dir=tmp_path)
    assert [h["learning_rate"] for h in result.history] == [3e-3, 3e-3]
