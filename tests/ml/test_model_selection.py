"""Model selection (which epoch goes to best.pt, and which metric chose it) and the
per-subject predictions a finished run writes (issue 15, item 6)."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from attrivue_core.configs import RunConfig
from worker.ml.training import (
    CLASSIFICATION_FLOOR,
    PREDICTIONS_FILE,
    SubjectSample,
    train,
)
from worker.ml.training.loop import RunState as _State
from worker.ml.training.selection import update_best as _update_best

GRID = (12, 14, 12)
SHAPE = (14, 16, 14)


def _choose(metric: str, epochs: list[dict[str, float | None]]) -> _State:
    """Feed ``epochs`` (validation metrics) to the selection, as the loop does."""
    config = RunConfig(early_stopping_metric=metric, device="cpu")
    state = _State()
    for number, metrics in enumerate(epochs, start=1):
        state.epoch = number
        _update_best(config, state, metrics)
    return state


def test_an_attribution_metric_cannot_pick_an_epoch_whose_classifier_is_at_chance() -> None:
    epochs = [
        # The classifier has not learned: the lesion mass is noise, however high.
        {"val_loss": 0.69, "val_auroc": 0.50, "val_lesion_mass": 0.90},
        {"val_loss": 0.40, "val_auroc": 0.85, "val_lesion_mass": 0.20},
        {"val_loss": 0.35, "val_auroc": 0.90, "val_lesion_mass": 0.30},
        {"val_loss": 0.68, "val_auroc": 0.55, "val_lesion_mass": 0.99},
    ]
    state = _choose("val_lesion_mass", epochs)
    assert state.best_epoch == 3 and state.best_metric == "val_lesion_mass"
    assert state.best_score == pytest.approx(0.30) and state.best_tier == 1
    assert state.bad_epochs == 1  # epoch 4 did not improve
    # The plain rule (no fallback) would have kept epoch 4's 0.99.
    assert max(range(4), key=lambda i: epochs[i]["val_lesion_mass"]) == 3


def test_while_no_epoch_classifies_the_best_is_chosen_by_val_auroc() -> None:
    epochs = [
        {"val_loss": 0.69, "val_auroc": 0.45, "val_attr_auroc": 0.95},
        {"val_loss": 0.69, "val_auroc": 0.58, "val_attr_auroc": 0.50},
        {"val_loss": 0.69, "val_auroc": 0.52, "val_attr_auroc": 0.99},
    ]
    state = _choose("val_attr_auroc", epochs)
    assert state.best_epoch == 2 and state.best_metric == "val_auroc"
    assert state.best_tier == 0
    # Once the classifier works, its epoch wins whatever its attribution metric.
    epochs.append({"val_loss": 0.5, "val_auroc": CLASSIFICATION_FLOOR, "val_attr_auroc": 0.1})
    state = _choose("val_attr_auroc", epochs)
    assert state.best_epoch == 4 and state.best_metric == "val_attr_auroc"


def _choose_with_margin(
    margin: float, epochs: list[dict[str, float | None]], metric: str = "val_lesion_mass"
) -> _State:
    """As the engine does: the epoch's record is in the history before the selection."""
    config = RunConfig(early_stopping_metric=metric, selection_auroc_margin=margin, device="cpu")
    state = _State()
    for number, metrics in enumerate(epochs, start=1):
        state.epoch = number
        state.history.append({"epoch": number, **metrics})
        _update_best(config, state, metrics)
    return state


def test_the_auroc_margin_picks_the_best_maps_among_nearly_best_classifiers() -> None:
    epochs = [
        {"val_loss": 0.40, "val_auroc": 0.95, "val_lesion_mass": 0.20},
        {"val_loss": 0.45, "val_auroc": 0.93, "val_lesion_mass": 0.40},  # in the margin
        {"val_loss": 0.60, "val_auroc": 0.85, "val_lesion_mass": 0.90},  # outside it
        {"val_loss": 0.50, "val_auroc": 0.92, "val_lesion_mass": 0.50},  # in it, best maps
    ]
    state = _choose_with_margin(0.03, epochs)
    assert state.best_epoch == 4 and state.best_metric == "val_lesion_mass"
    assert state.best_score == pytest.approx(0.50)
    # Without the margin the lesion mass alone takes epoch 3, whose AUROC fell by 0.10.
    assert _choose("val_lesion_mass", epochs).best_epoch == 3


def test_a_later_better_classifier_demotes_a_best_epoch_outside_the_new_margin() -> None:
    epochs = [
        {"val_loss": 0.50, "val_auroc": 0.80, "val_lesion_mass": 0.60},
        {"val_loss": 0.30, "val_auroc": 0.95, "val_lesion_mass": 0.10},  # raises the top
        {"val_loss": 0.55, "val_auroc": 0.81, "val_lesion_mass": 0.70},  # far below it
    ]
    state = _choose_with_margin(0.03, epochs)
    assert state.best_epoch == 2 and state.best_tier == 1
    assert state.best_metric == "val_lesion_mass"
    assert state.bad_epochs == 1


def test_the_healthy_share_selects_the_lowest_inside_the_margin() -> None:
    # The weakly supervised target needs no lesion mask: the share of positive relevance on
    # healthy validation subjects, lower is better.
    epochs = [
        {"val_loss": 0.20, "val_auroc": 1.00, "val_attr_healthy_share": 0.30},
        {"val_loss": 0.25, "val_auroc": 0.98, "val_attr_healthy_share": 0.12},  # in the margin
        {"val_loss": 0.60, "val_auroc": 0.90, "val_attr_healthy_share": 0.01},  # outside it
        {"val_loss": 0.30, "val_auroc": 0.99, "val_attr_healthy_share": 0.05},  # in it, lowest
        {"val_loss": 0.30, "val_auroc": 0.99, "val_attr_healthy_share": 0.08},
    ]
    state = _choose_with_margin(0.03, epochs, metric="val_attr_healthy_share")
    assert state.best_epoch == 4 and state.best_metric == "val_attr_healthy_share"
    assert state.best_score == pytest.approx(-0.05)
    # Without the margin the share alone takes epoch 3, whose AUROC fell by 0.10.
    assert _choose("val_attr_healthy_share", epochs).best_epoch == 3


def test_below_the_floor_the_margin_changes_nothing() -> None:
    epochs = [
        {"val_loss": 0.69, "val_auroc": 0.50, "val_lesion_mass": 0.90},
        {"val_loss": 0.69, "val_auroc": 0.55, "val_lesion_mass": 0.10},
    ]
    state = _choose_with_margin(0.03, epochs)
    assert state.best_epoch == 2 and state.best_tier == 0 and state.best_metric == "val_auroc"


def test_a_floored_run_keeps_an_epoch_with_its_floors_over_one_without() -> None:
    # evidence_floor_start_auroc: the floors start once the validation AUROC reached the gate;
    # the epochs before them have better-looking lesion mass but unfloored detectors.
    epochs = [
        {"val_loss": 0.5, "val_auroc": 0.95, "val_lesion_mass": 0.40, "val_evidence_floored": 0},
        {"val_loss": 0.4, "val_auroc": 0.99, "val_lesion_mass": 0.35, "val_evidence_floored": 1},
        {"val_loss": 0.4, "val_auroc": 0.99, "val_lesion_mass": 0.38, "val_evidence_floored": 1},
    ]
    state = _choose_with_margin(0.03, epochs)
    assert state.best_epoch == 3 and state.best_metric == "val_lesion_mass"
    assert _choose("val_lesion_mass", epochs).best_epoch == 3
    # Without the mark (a run without the gate) the first epoch would have stayed best.
    plain = [{k: v for k, v in e.items() if k != "val_evidence_floored"} for e in epochs]
    assert _choose("val_lesion_mass", plain).best_epoch == 1
    # While no epoch has its floors, they rank among themselves as before.
    assert (
        _choose("val_lesion_mass", [epochs[0], {**epochs[0], "val_lesion_mass": 0.5}]).best_epoch
        == 2
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"selection_auroc_margin": 0.03},  # val_auroc is no attribution metric
        {
            "selection_auroc_margin": 0.03,
            "early_stopping_metric": "val_lesion_mass",
            "val_attribution": False,
        },
        {"selection_auroc_margin": -0.1, "early_stopping_metric": "val_lesion_mass"},
    ],
)
def test_a_margin_without_an_attribution_metric_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="selection_auroc_margin|greater than or equal"):
        RunConfig.model_validate(fields)


def test_undefined_metrics_fall_back_as_before() -> None:
    # One class in the validation split: no AUROC, the classifier cannot be judged; the
    # attribution metric keeps ranking.
    state = _choose(
        "val_lesion_mass",
        [
            {"val_loss": 0.6, "val_auroc": None, "val_lesion_mass": 0.2},
            {"val_loss": 0.7, "val_auroc": None, "val_lesion_mass": 0.4},
        ],
    )
    assert state.best_epoch == 2 and state.best_metric == "val_lesion_mass"
    # Without attribution metrics (val_attribution off): the validation loss.
    state = _choose("val_attr_dice", [{"val_loss": 0.6}, {"val_loss": 0.5}, {"val_loss": 0.55}])
    assert state.best_epoch == 2 and state.best_metric == "val_loss"
    # A classification metric is never demoted.
    state = _choose("val_auroc", [{"val_loss": 0.6, "val_auroc": 0.3}, {"val_auroc": 0.2}])
    assert state.best_epoch == 1 and state.best_metric == "val_auroc" and state.best_tier == 1
    # No validation split: the latest epoch, chosen by nothing.
    state = _choose("val_auroc", [{"val_loss": None}, {"val_loss": None}])
    assert state.best_epoch == 2 and state.best_metric is None


# --------------------------------------------------------------------------- a real run


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def subjects(tmp_path_factory: pytest.TempPathFactory) -> list[SubjectSample]:
    """Bright-blob toy subjects on two sites, in three splits."""
    root = tmp_path_factory.mktemp("selection")
    rng = np.random.default_rng(3)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij"))
    brain = (grid**2).sum(axis=0) < 0.8
    out = []
    for split, count in (("train", 16), ("val", 8), ("test", 8)):
        for index in range(count):
            label = index % 2
            volume = brain * (1.0 + 0.1 * rng.standard_normal(SHAPE))
            if label:
                centre = rng.uniform(-0.3, 0.3, size=3)
                volume += 2.0 * (((grid - centre[:, None, None, None]) ** 2).sum(0) < 0.09)
            path = root / f"{split}-{index}.nii.gz"
            nib.save(nib.Nifti1Image(volume.astype(np.float32), np.eye(4)), path)
            site = "A" if index < count // 2 else "B"
            out.append(SubjectSample(f"{split}{index}", path, None, label, split, site=site))
    return out


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
def test_a_run_records_its_best_metric_and_predicts_every_subject(
    subjects: list[SubjectSample], tmp_path: Path, augment: bool
) -> None:
    config = RunConfig(
        grid=GRID,
        epochs=2,
        batch_size=4,
        learning_rate=3e-3,
        device="cpu",
        val_attribution=False,
        augment=augment,
        early_stopping_metric="val_lesion_mass",  # undefined here: val_loss or val_auroc
    )
    result = train(config, subjects, checkpoint_dir=tmp_path)
    assert result.best_metric in ("val_loss", "val_auroc")
    assert 1 <= result.best_epoch <= 2

    rows = result.predictions
    assert sorted(str(r.subject_id) for r in rows) == sorted(str(s.subject_id) for s in subjects)
    truth = {s.subject_id: s for s in subjects}
    for row in rows:
        subject = truth[row.subject_id]
        assert (row.split, row.label, row.site) == (subject.split, subject.label, subject.site)
        assert math.isfinite(row.logit)
        assert row.probability == pytest.approx(1 / (1 + math.exp(-row.logit)), rel=1e-6)
    # The test rows are what the test metrics were computed from.
    test = [r for r in rows if r.split == "test"]
    accuracy = np.mean([(r.probability >= 0.5) == bool(r.label) for r in test])
    assert accuracy == pytest.approx(result.test_metrics["accuracy"])

    with open(tmp_path / PREDICTIONS_FILE, newline="") as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == len(subjects)
    assert {w["subject_id"]: float(w["logit"]) for w in written} == pytest.approx(
        {str(r.subject_id): r.logit for r in rows}
    )


def test_a_resumed_run_keeps_the_metric_that_chose_its_best_epoch(
    subjects: list[SubjectSample], tmp_path: Path
) -> None:
    config = RunConfig(
        grid=GRID,
        epochs=1,
        batch_size=4,
        device="cpu",
        val_attribution=False,
        early_stopping_metric="val_attr_auroc",
    )
    first = train(config, subjects, checkpoint_dir=tmp_path)
    assert first.best_epoch == 1 and first.best_metric in ("val_auroc", "val_loss")
    # A crash after epoch 1 of a longer run: the next call resumes from last.pt.
    longer = config.model_copy(update={"epochs": 2})
    resumed = train(longer, subjects, checkpoint_dir=tmp_path)
    assert resumed.resumed_from_epoch == 1 and resumed.epochs_completed == 2
    assert resumed.best_metric in ("val_auroc", "val_loss", "val_attr_auroc")
    assert resumed.best_epoch in (1, 2) and len(resumed.predictions) == len(subjects)
    stored = torch.load(tmp_path / "last.pt", weights_only=True)
    assert stored["best_metric"] == resumed.best_metric and stored["best_tier"] in (0, 1)
