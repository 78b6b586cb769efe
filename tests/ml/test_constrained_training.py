"""Tests of training with the attribution constraint (docs/method.md section 3) and of the
attribution metrics that every run reports (worker.ml.evaluation)."""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from attrivue_core.configs import RunConfig, TrainAttributionName
from worker.ml.attribution.differentiable import ATTRIBUTION_METHODS
from worker.ml.evaluation import evaluate_attributions, json_safe
from worker.ml.nets import build_network
from worker.ml.training import ProgressEvent, SubjectSample, train
from worker.ml.training import classification as training

GRID = (16, 20, 16)
NATIVE_SHAPE = (18, 22, 18)
NATIVE_AFFINE = np.diag([1.1, 1.0, 1.2, 1.0])
SPLITS = {"train": 16, "val": 8, "test": 8}
TEST_ATTRIBUTION_KEYS = {
    "attr_dice",
    "attr_dice_top5",
    "attr_voxel_auroc",
    "attr_voxel_auprc",
    "attr_lesion_mass",
    "attr_pointing_game",
    "attr_healthy_share",
    "attr_threshold",
}
SETTINGS = ["lc_only", "la_only", "lc_la_supervised", "lc_la_unsupervised"]


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    # Tiny volumes gain nothing from intra-op threads; results are also pinned to one thread.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _toy_subject(rng: np.random.Generator, pathological: bool) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoidal 'brain' with noise (background exactly 0); pathological subjects get a
    bright blob, which is their lesion mask."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in NATIVE_SHAPE], indexing="ij"))
    brain = (grid**2).sum(axis=0) < 0.8
    volume = brain * (1.0 + 0.1 * rng.standard_normal(NATIVE_SHAPE))
    blob = np.zeros(NATIVE_SHAPE, dtype=bool)
    if pathological:
        centre = rng.uniform(-0.35, 0.35, size=3)
        blob = ((grid - centre[:, None, None, None]) ** 2).sum(axis=0) < 0.3**2
        volume = volume + 2.0 * blob
    return volume.astype(np.float32), blob.astype(np.uint8)


@pytest.fixture(scope="module")
def toy_subjects(tmp_path_factory: pytest.TempPathFactory) -> list[SubjectSample]:
    """Balanced splits; every pathological subject has its lesion mask."""
    root = tmp_path_factory.mktemp("toy_masks")
    rng = np.random.default_rng(7)
    subjects = []
    for split, count in SPLITS.items():
        for index in range(count):
            label = index % 2
            volume, blob = _toy_subject(rng, bool(label))
            image = root / f"{split}{index}.nii.gz"
            nib.save(nib.Nifti1Image(volume, NATIVE_AFFINE), image)
            mask = None
            if label:
                mask = root / f"{split}{index}_mask.nii.gz"
                nib.save(nib.Nifti1Image(blob, NATIVE_AFFINE), mask)
            subjects.append(SubjectSample(f"{split}{index}", image, mask, label, split))
    return subjects


def _config(**overrides) -> RunConfig:
    values = {
        "grid": GRID,
        "epochs": 1,
        "batch_size": 4,
        "learning_rate": 3e-3,
        "device": "cpu",
        "seed": 0,
    }
    return RunConfig(**{**values, **overrides})


def _without_mask(subjects: list[SubjectSample], subject_id: str) -> list[SubjectSample]:
    return [
        dataclasses.replace(s, mask=None) if s.subject_id == subject_id else s for s in subjects
    ]


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


@pytest.mark.parametrize("setting", SETTINGS)
def test_each_setting_trains_an_epoch_and_reports_its_terms(
    setting: str, toy_subjects: list[SubjectSample], tmp_path: Path
) -> None:
    # One pathological training subject without a mask: unconstrained, and it still collates.
    subjects = _without_mask(toy_subjects, "train1")
    events: list[ProgressEvent] = []
    result = train(
        _config(loss_setting=setting), subjects, checkpoint_dir=tmp_path, progress=events.append
    )

    steps = [e for e in events if e.kind == "step"]
    epoch = next(e for e in events if e.kind == "epoch")
    assert len(steps) == SPLITS["train"] // 4
    for index, event in enumerate([*steps, epoch]):
        assert _finite(event.loss_c)
        assert _finite(event.step_seconds)
        if setting == "lc_only" and index in (0, len(steps)):
            # The probe of the first batch (and so the epoch means): L_A measured, not trained.
            assert _finite(event.loss_a) and _finite(event.grad_norm_a) and event.grad_norm_a > 0
            assert _finite(event.grad_cosine) and -1.0 <= event.grad_cosine <= 1.0
            # Epoch: the mean over the probe steps (here the first step alone).
            probe = steps[0]
            assert event.grad_ratio == pytest.approx(probe.grad_norm_a / probe.grad_norm_c)
            assert event.lambda_a is None and event.grad_weight_a is None
            assert _finite(event.attribution_seconds) and _finite(event.attribution_abs_mean)
        elif setting == "lc_only":
            assert event.loss_a is None and event.grad_norm_a is None
            assert event.lambda_a is None and event.attribution_seconds is None
            assert event.attribution_abs_mean is None
        elif setting != "la_only" and index not in (0, len(steps)):
            # After the first (instrumented) step, one backward of L_C + lambda L_A: the
            # applied gradient's norm only (the epoch means are those of the first step).
            assert _finite(event.loss_a) and event.loss_a > 0
            assert event.grad_norm_a is None and event.grad_norm_c is None
            assert event.grad_ratio is None and event.grad_cosine is None
            assert _finite(event.grad_norm_total) and event.grad_norm_total > 0
            continue
        else:
            assert _finite(event.loss_a) and event.loss_a > 0
            # L_A reaches the weights: its gradient is not zero.
            assert _finite(event.grad_norm_a) and event.grad_norm_a > 0
            assert _finite(event.attribution_abs_mean) and event.attribution_abs_mean > 0
            assert _finite(event.attribution_seconds)
            assert event.attribution_seconds <= event.step_seconds
            assert event.lambda_a == (None if setting == "la_only" else 1.0)
        if setting == "la_only":
            assert event.grad_norm_c is None  # L_C is reported, not trained
        else:
            assert _finite(event.grad_norm_c) and event.grad_norm_c > 0

    record = result.history[0]
    assert {"train_loss_a", "train_grad_norm_a", "lambda_a", "train_attribution_seconds"} <= set(
        record
    )
    assert {"val_attr_auroc", "val_lesion_mass", "val_attr_threshold"} <= set(record)
    assert _finite(record["val_lesion_mass"]) and _finite(record["val_attr_threshold"])
    assert set(result.test_metrics) >= TEST_ATTRIBUTION_KEYS | {"auroc", "accuracy"}
    assert _finite(result.test_metrics["attr_lesion_mass"])
    json.dumps({"history": result.history, "test": result.test_metrics}, allow_nan=False)


def test_summed_training_attributions_and_a_warm_up(
    toy_subjects: list[SubjectSample], tmp_path: Path
) -> None:
    config = _config(
        loss_setting="lc_la_unsupervised",
        train_attribution=["gradient", "integrated_gradients", "expected_gradients"],
        ig_steps=2,
        eg_zero_reference_prob=0.5,
        attribution_loss="rrr",
        lambda_a={"kind": "linear_warmup", "value": 2.0, "warmup_epochs": 1.0},
        restrict_to_brain=False,
        val_attribution=False,
        grad_probe_batches=4,  # every step measures the two gradients apart
    )
    events: list[ProgressEvent] = []
    result = train(config, toy_subjects, checkpoint_dir=tmp_path, progress=events.append)

    steps = [e for e in events if e.kind == "step"]
    assert [e.lambda_a for e in steps] == pytest.approx([0.0, 0.5, 1.0, 1.5])
    # At lambda 0 the double backward is skipped; afterwards L_A contributes.
    assert steps[0].grad_norm_a == 0.0
    assert all(_finite(e.grad_norm_a) and e.grad_norm_a > 0 for e in steps[1:])
    assert "val_attr_auroc" not in result.history[0]
    assert set(result.test_metrics) >= TEST_ATTRIBUTION_KEYS


def test_supervised_constraint_moves_relevance_into_the_lesions(
    toy_subjects: list[SubjectSample], tmp_path: Path
) -> None:
    # Same seed, data and budget; only the loss differs (the supervised preset's constraint:
    # IG with 4 points in L_A from the zero image, lambda 5). The brain-mask preprocessing
    # and the validation calibration of the logit are on, as in every run.
    common = {"epochs": 8, "early_stopping_metric": "val_auroc"}
    plain = train(_config(**common), toy_subjects, checkpoint_dir=tmp_path / "lc")
    constrained = train(
        _config(
            loss_setting="lc_la_supervised",
            train_attribution=["integrated_gradients"],
            ig_steps=4,
            lambda_a={"value": 5.0},
            **common,
        ),
        toy_subjects,
        checkpoint_dir=tmp_path / "la",
    )
    # L_C alone already finds these toys' bright lesions (lesion mass 0.56 when measured);
    # the constraint keeps that (0.62) and removes the pathological relevance of healthy
    # subjects (healthy share 0.37 -> 0.02).
    assert (
        constrained.test_metrics["attr_lesion_mass"] > plain.test_metrics["attr_lesion_mass"] - 0.1
    )
    assert constrained.test_metrics["attr_healthy_share"] < 0.1
    assert (
        plain.test_metrics["attr_healthy_share"]
        > 3 * constrained.test_metrics["attr_healthy_share"]
    )
    # The constraint pushes every logit down (validation accuracy 0.5 at AUROC 1.0 before
    # calibration); the offset folded into best.pt gives the decision its threshold back.
    assert constrained.test_metrics["auroc"] > 0.9
    assert constrained.test_metrics["accuracy"] >= 0.75
    assert constrained.test_metrics["calibration_offset"] != 0.0


def test_resume_of_a_constrained_run_matches_an_uninterrupted_one(
    toy_subjects: list[SubjectSample], tmp_path: Path
) -> None:
    # EG draws random references: the per-epoch generator must be restored as well; so must
    # the GradNorm weights of the gradient balancing.
    overrides = {
        "loss_setting": "lc_la_supervised",
        "train_attribution": ["gradient", "expected_gradients"],
        "lambda_a": {"kind": "linear_warmup", "value": 1.0, "warmup_epochs": 1.5},
        "grad_balance": "gradnorm",
    }
    straight = train(_config(epochs=2, **overrides), toy_subjects, checkpoint_dir=tmp_path / "a")
    first = train(_config(epochs=1, **overrides), toy_subjects, checkpoint_dir=tmp_path / "b")
    second = train(_config(epochs=2, **overrides), toy_subjects, checkpoint_dir=tmp_path / "b")

    assert first.resumed_from_epoch is None and second.resumed_from_epoch == 1
    assert [h["epoch"] for h in second.history] == [1, 2]
    for resumed, uninterrupted in zip(second.history, straight.history, strict=True):
        for key in (
            "train_loss_c",
            "train_loss_a",
            "train_grad_norm_a",
            "lambda_a",
            "val_loss",
            "train_grad_weight_a",
        ):
            assert resumed[key] == pytest.approx(uninterrupted[key], rel=1e-5), key
    # The weights did move away from 1 (the test would not notice a reset otherwise).
    assert straight.history[1]["train_grad_weight_a"] != pytest.approx(1.0)
    assert second.test_metrics["attr_lesion_mass"] == pytest.approx(
        straight.test_metrics["attr_lesion_mass"], rel=1e-5
    )


def test_remedies_in_a_run_la_every_n_steps_fixed_ratio_and_clipping(
    toy_subjects: list[SubjectSample], tmp_path: Path
) -> None:
    events: list[ProgressEvent] = []
    config = _config(
        loss_setting="lc_la_supervised",
        la_every_n_steps=2,
        grad_balance="fixed_ratio",
        grad_balance_ratio=0.5,
        grad_clip_norm=1e-3,
        val_attribution=False,
        amp=True,  # asked for explicitly on a CPU: a no-op with a warning
    )
    with pytest.warns(RuntimeWarning, match="mixed precision runs on CUDA only"):
        result = train(config, toy_subjects, checkpoint_dir=tmp_path, progress=events.append)
    steps = [e for e in events if e.kind == "step"]
    # L_A on steps 1 and 3 of the run (0-based 0 and 2), L_C alone on 2 and 4.
    assert [e.loss_a is not None for e in steps] == [True, False, True, False]
    for event in steps[::2]:
        assert _finite(event.attribution_seconds) and _finite(event.grad_cosine)
        # The applied L_A gradient has half the norm of the L_C gradient.
        applied = event.grad_weight_a * event.grad_norm_a / event.grad_norm_c
        assert applied == pytest.approx(0.5, rel=1e-4)
    for event in steps[1::2]:
        assert event.attribution_seconds is None and event.grad_ratio is None
        assert event.grad_weight_a is None
    # Every gradient is far above 1e-3: every step was clipped.
    assert all(e.clip_fraction == 1.0 and e.grad_norm_total > 1e-3 for e in steps)
    record = result.history[0]
    assert record["train_clip_fraction"] == 1.0 and record["amp_active"] == 0.0
    assert 0.0 < record["train_attribution_share"] < 1.0


def test_amp_attribution_gain_leaves_the_losses_unchanged(
    toy_subjects: list[SubjectSample], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under AMP the training attribution explains gain * F so that float16 input gradients do
    # not underflow; the bookkeeping must undo the gain exactly. Checked here in float32.
    config = _config(
        loss_setting="lc_la_supervised",
        train_attribution=["gradient", "integrated_gradients"],
        ig_steps=2,
        attribution_mode="train",  # reuses the attribution's logits for L_C
        val_attribution=False,
    )
    reference = train(config, toy_subjects, checkpoint_dir=tmp_path / "plain").history[0]
    monkeypatch.setattr(training, "_attribution_gain", lambda loop: 1024.0)
    gained = train(config, toy_subjects, checkpoint_dir=tmp_path / "gain").history[0]
    for key in (
        "train_loss_c",
        "train_loss_a",
        "train_grad_norm_c",
        "train_grad_norm_a",
        "train_attribution_abs_mean",
        "val_loss",
    ):
        assert gained[key] == pytest.approx(reference[key], rel=1e-4), key


def test_settings_with_mask_targets_need_a_masked_training_subject(
    toy_subjects: list[SubjectSample], tmp_path: Path
) -> None:
    no_train_masks = [
        dataclasses.replace(s, mask=None) if s.split == "train" else s for s in toy_subjects
    ]
    for setting in ("lc_la_supervised", "la_only"):
        with pytest.raises(ValueError, match="mask"):
            train(_config(loss_setting=setting), no_train_masks, checkpoint_dir=tmp_path)
    # The weakly supervised constraint needs image labels only.
    result = train(
        _config(loss_setting="lc_la_unsupervised", val_attribution=False),
        [dataclasses.replace(s, mask=None) for s in toy_subjects],
        checkpoint_dir=tmp_path / "weak",
    )
    assert result.test_metrics["attr_lesion_mass"] is None  # no mask to score against
    assert result.test_metrics["attr_healthy_share"] is not None


def test_run_config_attribution_fields() -> None:
    assert set(typing.get_args(TrainAttributionName)) == set(ATTRIBUTION_METHODS)
    # A config stored before these fields existed still validates, with the defaults.
    old = RunConfig.model_validate({"network": "small_cnn", "loss_setting": "lc_only"})
    assert old.train_attribution == ["gradient"] and old.lambda_a.value == 1.0
    stored = _config(loss_setting="la_only", lambda_a={"kind": "linear_warmup"})
    assert RunConfig.model_validate(stored.model_dump(mode="json")) == stored
    with pytest.raises(ValueError, match="more than once"):
        _config(train_attribution=["gradient", "gradient"])
    with pytest.raises(ValueError):
        _config(train_attribution=[])
    with pytest.raises(ValueError):
        _config(lambda_a={"kind": "cosine"})


def test_progress_event_keeps_its_original_fields() -> None:
    event = ProgressEvent(
        kind="done",
        epoch=1,
        epochs=1,
        step=0,
        steps=0,
        loss_c=None,
        grad_norm_c=None,
        metrics={},
        seconds=0.0,
        fraction=1.0,
    )
    assert event.loss_a is None and event.attribution_seconds is None


# --------------------------------------------------------------------------- evaluation


def _eval_samples(rng: np.random.Generator) -> list[tuple[torch.Tensor, torch.Tensor | None, int]]:
    """Grid-sized toy samples: a zero background, a bright blob in pathological subjects."""
    samples = []
    for index in range(4):
        label = index % 2
        image = torch.zeros(1, *GRID)
        image[:, 2:14, 3:17, 2:14] = 1.0 + 0.1 * torch.from_numpy(
            rng.standard_normal((1, 12, 14, 12)).astype(np.float32)
        )
        mask = None
        if label:
            mask = torch.zeros(1, *GRID)
            mask[:, 5:9, 6:10, 5:9] = 1.0
            image = image + 2.0 * mask
        samples.append((image, mask, label))
    return samples


def test_evaluate_attributions_keys_threshold_and_json_safety() -> None:
    torch.manual_seed(0)
    model = build_network("small_cnn")
    samples = _eval_samples(np.random.default_rng(0))

    chosen = evaluate_attributions(model, samples, steps=4, keep_maps=True)
    assert model.training  # the caller's mode is restored
    keys = {
        "dice_at_threshold",
        "dice_top_k",
        "voxel_auroc",
        "voxel_auprc",
        "lesion_mass",
        "pointing_game",
        "healthy_share",
        "threshold",
        "ig_delta_abs_mean",
    }
    assert keys <= set(chosen.metrics)
    assert chosen.chosen_threshold is not None and chosen.chosen_threshold >= 0
    assert chosen.metrics["threshold"] == chosen.chosen_threshold
    assert chosen.metrics["n_pathological"] == 2 and chosen.metrics["n_healthy"] == 2
    assert chosen.maps is not None and chosen.maps[0].shape == GRID
    assert chosen.seconds > 0

    fixed = evaluate_attributions(model, samples, steps=4, threshold=0.0)
    assert fixed.metrics["threshold"] == 0.0
    assert fixed.metrics["lesion_mass"] == pytest.approx(chosen.metrics["lesion_mass"])

    # Only healthy subjects: every lesion metric is undefined, reported as None (not nan).
    healthy = evaluate_attributions(model, [s for s in samples if s[2] == 0], steps=4)
    assert healthy.chosen_threshold is None
    assert healthy.metrics["voxel_auroc"] is None and healthy.metrics["dice_at_threshold"] is None
    assert healthy.metrics["threshold"] is None
    assert healthy.metrics["healthy_share"] is not None
    json.dumps(healthy.metrics, allow_nan=False)

    empty = evaluate_attributions(model, [], steps=4)
    assert empty.metrics["lesion_mass"] is None and empty.chosen_threshold is None


def test_json_safe_replaces_non_finite_values() -> None:
    clean = json_safe({"a": float("nan"), "b": np.float64(0.5), "c": float("inf"), "d": 3})
    assert clean == {"a": None, "b": 0.5, "c": None, "d": 3}
    assert isinstance(clean["b"], float)


def test_healthy_baseline_is_the_mean_healthy_training_image_and_the_maps_start_there(
    toy_subjects: list[SubjectSample], tmp_path: Path
) -> None:
    from worker.ml.transforms import IMAGE_KEY, preprocess_for

    config = _config(
        loss_setting="lc_la_supervised",
        train_attribution=["integrated_gradients"],
        ig_steps=2,
        attribution_baseline="healthy",
        attribution_balance=True,
    )
    result = train(config, toy_subjects, checkpoint_dir=tmp_path)
    baseline = training.load_baseline(result.best_checkpoint)
    assert baseline is not None and tuple(baseline.shape) == (1, *GRID)
    # The last weights carry it too: the suite scores them with the run's own baseline, not
    # the zero image.
    last_baseline = training.load_baseline(result.last_checkpoint)
    assert last_baseline is not None
    torch.testing.assert_close(last_baseline, baseline)
    transform = preprocess_for(config)
    healthy = [
        transform({IMAGE_KEY: str(s.image)})[IMAGE_KEY].as_tensor()
        for s in toy_subjects
        if s.split == "train" and s.label == 0
    ]
    torch.testing.assert_close(baseline, torch.stack(healthy).mean(0), atol=1e-5, rtol=1e-5)
    # The evaluation maps integrate from that image: their completeness gap is measured
    # against F(baseline), and stays small (16 Gauss-Legendre points).
    assert result.test_metrics["attr_ig_delta"] is not None
    model, _ = training.load_model(result.best_checkpoint)
    x = transform({IMAGE_KEY: str(toy_subjects[-1].image)})[IMAGE_KEY].as_tensor()
    evaluation = evaluate_attributions(
        model, [(x, None, 0)], steps=16, baseline=baseline, keep_maps=True
    )
    with torch.no_grad():
        gap = float(model(x[None]).flatten()[0] - model(baseline[None]).flatten()[0])
    assert evaluation.maps is not None
    assert float(evaluation.maps[0].sum()) == pytest.approx(gap, abs=0.05 * abs(gap) + 1e-4)
    # The zero baseline stores none.
    plain = train(_config(), toy_subjects, checkpoint_dir=tmp_path / "zero")
    assert training.load_baseline(plain.best_checkpoint) is None
    assert training.load_baseline(plain.last_checkpoint) is None


def test_blur_baseline_trains_and_explains_each_subject_from_its_own_local_mean(
    toy_subjects: list[SubjectSample], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.ml.attribution.baselines import LocalMeanBaseline, local_mean
    from worker.ml.training import constrained
    from worker.ml.transforms import IMAGE_KEY, preprocess_for

    seen: list[tuple[int, ...]] = []

    def spy(images: torch.Tensor, sigma: float) -> torch.Tensor:
        assert sigma == 1.5
        seen.append(tuple(images.shape))
        return local_mean(images, sigma)

    monkeypatch.setattr(constrained, "local_mean", spy)
    config = _config(
        loss_setting="lc_la_supervised",
        train_attribution=["integrated_gradients"],
        ig_steps=2,
        attribution_baseline="blur",
        attribution_blur_sigma=1.5,
        baseline_logit_weight=1.0,
        attribution_normalise=True,
    )
    result = train(config, toy_subjects, checkpoint_dir=tmp_path)
    # Every training batch got its own references: once for the path of IG, once for the
    # baseline-logit term (16 training subjects in batches of 4).
    assert seen.count((4, 1, *GRID)) == 2 * SPLITS["train"] // 4
    assert all(math.isfinite(float(v)) for v in result.history[-1].values() if v is not None)
    # Nothing is stored: the baseline is a function of the image.
    assert training.load_baseline(result.best_checkpoint) is None
    # The test maps of the run start from each subject's local mean: small completeness gap.
    assert result.test_metrics["attr_ig_delta"] is not None
    assert result.test_metrics["attr_ig_delta"] < 0.05
    model, _ = training.load_model(result.best_checkpoint)
    x = preprocess_for(config)({IMAGE_KEY: str(toy_subjects[-1].image)})[IMAGE_KEY].as_tensor()
    evaluation = evaluate_attributions(
        model, [(x, None, 0)], steps=16, baseline=LocalMeanBaseline(1.5), keep_maps=True
    )
    with torch.no_grad():
        gap = float(model(x[None]).flatten()[0] - model(local_mean(x[None], 1.5)).flatten()[0])
    assert evaluation.maps is not None
    assert float(evaluation.maps[0].sum()) == pytest.approx(gap, abs=0.05 * abs(gap) + 1e-4)


def test_calibration_offset_restores_the_threshold_without_touching_the_maps(
    toy_subjects: list[SubjectSample],
) -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    logits = np.array([-6.0, -5.5, -5.0, -2.0, -1.5, -1.0])  # ranked right, all below 0
    offset = training.calibration_offset(labels, logits)
    assert 2.0 < offset < 5.0
    assert ((logits + offset > 0) == (labels == 1)).all()
    assert training.calibration_offset([1, 1], [0.3, 0.5]) == 0.0  # one class: nothing to fit

    # Folded into the output bias, the offset moves every logit and no attribution.
    torch.manual_seed(0)
    model = build_network("small_cnn").eval()
    x = torch.randn(2, 1, *GRID)
    before = ATTRIBUTION_METHODS["gradient"](model, x, create_graph=False).attributions
    with torch.no_grad():
        logit_before = model(x).flatten()
        bias = model.head.bias  # SmallCNN: the last layer, the one calibration moves
        assert isinstance(bias, torch.Tensor)
        bias.add_(2.5)
        logit_after = model(x).flatten()
    after = ATTRIBUTION_METHODS["gradient"](model, x, create_graph=False).attributions
    torch.testing.assert_close(logit_after - logit_before, torch.full((2,), 2.5))
    torch.testing.assert_close(after, before)


def test_balanced_attribution_loss_weighs_lesion_and_background_equally() -> None:
    from worker.ml.losses import attribution_loss

    targets = torch.zeros(1, 1, 1, 1, 10)
    targets[..., 0] = 1.0  # one lesion voxel, nine background voxels
    attributions = torch.zeros(1, 1, 1, 1, 10)
    attributions[..., 0] = -2.0  # the lesion voxel has the wrong sign
    plain = attribution_loss(attributions, targets)
    balanced = attribution_loss(attributions, targets, balance=True)
    wrong = float(torch.nn.functional.softplus(torch.tensor(2.0)))  # BCE(-2, 1)
    right = math.log(2.0)  # BCE(0, 0)
    assert float(plain) == pytest.approx((wrong + 9 * right) / 10)
    assert float(balanced) == pytest.approx((wrong + right) / 2)


def test_pooling_option_is_small_cnn_only() -> None:
    from worker.ml.regression import build_model

    assert build_model(_config(pooling="avgmax")).pooling == "avgmax"
    assert build_model(_config()).pooling == "max"
    with pytest.raises(ValueError, match="small_cnn only"):
        _config(network="patchgan", pooling="avg")


def test_activation_option_is_small_cnn_only_and_a_relu_detector_passes_no_leak() -> None:
    from worker.ml.regression import build_model

    relu = build_model(_config(activation="relu"))
    leaky = build_model(_config())
    assert {type(m).__name__ for m in relu.modules()} >= {"ReLU"}
    assert "ReLU" not in {type(m).__name__ for m in leaky.modules()}
    with pytest.raises(ValueError, match="small_cnn only"):
        _config(network="patchgan", activation="relu")
    # A unit below its threshold: LeakyReLU still passes a fifth of the gradient, ReLU none.
    x = torch.full((3,), -1.0, requires_grad=True)
    for module, expected in ((relu.features[0].adn.A, 0.0), (leaky.features[0].adn.A, 0.2)):
        (grad,) = torch.autograd.grad(module(x).sum(), x)
        assert torch.allclose(grad, torch.full((3,), expected))


def test_evidence_floor_cuts_a_detectors_healthy_range_out_of_the_logit_and_the_map() -> None:
    from worker.ml.nets import SmallCNN

    with pytest.raises(ValueError, match="small_cnn only"):
        _config(network="patchgan", evidence_floor="after_training")
    with pytest.raises(ValueError, match="classification task only"):
        _config(task="regression", evidence_floor="every_epoch")
    torch.manual_seed(0)
    model = SmallCNN(evidence_floor=True).eval()
    plain = SmallCNN().eval()
    plain.load_state_dict(model.state_dict(), strict=False)  # the same weights, no floor
    healthy = torch.randn(3, 1, *GRID)
    other = torch.randn(2, 1, *GRID)
    # Unset, the floors change nothing.
    with torch.no_grad():
        torch.testing.assert_close(model(other), plain(other))
    with pytest.raises(ValueError, match="without evidence_floor"):
        plain.set_evidence_floor(torch.zeros(1, 32))
    with torch.no_grad():
        features = model.pooled_features(healthy)  # (3, 32)
    detectors = model.head.weight[0] > 0
    # (A hair above the fitted subjects' maxima: a batch of one computes their features to
    # the last bit differently from the batch of three, and the maxima sit on the kink.)
    assert model.set_evidence_floor(features + 1e-4) == int(detectors.sum()) > 0
    assert model.floor is not None
    torch.testing.assert_close(model.floor[detectors], features.amax(0)[detectors] + 1e-4)
    # On the subjects the floors were fitted on, no detector adds to the logit ...
    weight, bias = model.head.weight[0].detach(), model.head.bias.detach()
    with torch.no_grad():
        healthy_only = bias + (features * weight * ~detectors).sum(1)
        torch.testing.assert_close(model(healthy), healthy_only)
    # ... nor to the map: the input gradient is that of the other features alone.
    image = healthy[:1].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(image).sum(), image)
    image2 = healthy[:1].clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(
        (model.pooled_features(image2) * weight * ~detectors).sum(), image2
    )
    torch.testing.assert_close(grad, expected)
    # A response beyond its floor passes what exceeds it.
    brighter = healthy[:1] * 3.0
    with torch.no_grad():
        raw = model.pooled_features(brighter)[0]
        passed = torch.where(detectors, (raw - model.floor).clamp_min(0), raw)
        torch.testing.assert_close(model(brighter), bias + (passed * weight).sum(0, keepdim=True))
    # The floors travel with the weights.
    state = model.state_dict()
    assert "floor" in state and "floored" in state


def test_a_quantile_floor_and_a_leak_below_it() -> None:
    from worker.ml.nets import SmallCNN

    with pytest.raises(ValueError, match="apply only with an evidence_floor"):
        _config(evidence_floor_quantile=0.9)
    with pytest.raises(ValueError, match="apply only with an evidence_floor"):
        _config(evidence_floor_leak=0.1)
    with pytest.raises(ValueError, match="apply only with an evidence_floor"):
        _config(evidence_floor_subjects="validation")
    with pytest.raises(ValueError):
        _config(evidence_floor="every_epoch", evidence_floor_quantile=0.0)
    with pytest.raises(ValueError):
        _config(evidence_floor="every_epoch", evidence_floor_leak=1.0)
    torch.manual_seed(0)
    model = SmallCNN(evidence_floor=True, evidence_floor_leak=0.25).eval()
    healthy = torch.randn(5, 1, *GRID)
    with torch.no_grad():
        features = model.pooled_features(healthy)
    detectors = model.head.weight[0] > 0
    with pytest.raises(ValueError, match="quantile"):
        model.set_evidence_floor(features, quantile=1.5)
    model.set_evidence_floor(features, quantile=0.5)
    assert model.floor is not None
    # The median of five responses is the third largest: two subjects lie above each floor.
    median = features.sort(dim=0).values[2]
    torch.testing.assert_close(model.floor[detectors], median[detectors])
    assert bool((model.floor[~detectors] == 0).all())
    # Above its floor a detector passes the excess; below it, a quarter of the (negative) gap.
    weight, bias = model.head.weight[0].detach(), model.head.bias.detach()
    gap = features - model.floor
    passed = torch.where(detectors, torch.where(gap > 0, gap, 0.25 * gap), features)
    with torch.no_grad():
        torch.testing.assert_close(model(healthy), bias + (passed * weight).sum(1))
    # So a subject below every floor still gives its detectors a gradient, which the floor
    # alone (no leak) does not.
    model.set_evidence_floor(features + 1.0)  # every subject below every floor
    plain = SmallCNN(evidence_floor=True).eval()
    plain.load_state_dict(model.state_dict())
    detector_weights = []
    for net in (model, plain):
        net.zero_grad()
        net(healthy).sum().backward()
        grad = net.features[-1].conv.weight.grad
        assert grad is not None
        detector_weights.append(grad[detectors].abs().sum().item())
    assert detector_weights[0] > 0.0 and detector_weights[1] == 0.0


def test_floors_from_the_validation_split_need_healthy_subjects_there(
    toy_subjects: list[SubjectSample],
) -> None:
    from worker.ml.training.constrained import floor_images

    config = _config(evidence_floor="every_epoch", evidence_floor_subjects="validation")
    no_healthy_val = [s for s in toy_subjects if not (s.split == "val" and s.label == 0)]
    with pytest.raises(ValueError, match="evidence_floor needs healthy subjects in the val split"):
        floor_images(config, no_healthy_val, {})


def test_floors_start_once_an_epoch_reached_the_validation_auroc() -> None:
    from worker.ml.training.constrained import floors_started

    with pytest.raises(ValueError, match="only with evidence_floor 'every_epoch'"):
        _config(evidence_floor="after_training", evidence_floor_start_auroc=0.9)
    ungated = _config(evidence_floor="every_epoch")
    gated = _config(evidence_floor="every_epoch", evidence_floor_start_auroc=0.9)
    assert floors_started(ungated, [])  # from the first epoch
    assert not floors_started(gated, [])
    # A record without a validation AUROC (no validation split) does not start them.
    assert not floors_started(gated, [{"val_auroc": 0.6}, {"val_auroc": None}, {}])
    assert floors_started(gated, [{"val_auroc": 0.6}, {"val_auroc": 0.9}, {"val_auroc": 0.7}])


def test_a_gated_floor_leaves_the_detectors_unfloored_until_the_gate(
    toy_subjects: list[SubjectSample], tmp_path: Path
) -> None:
    from worker.ml.nets import SmallCNN

    def floored(epochs: int) -> tuple[bool, list[float]]:
        config = _config(
            epochs=epochs,
            evidence_floor="every_epoch",
            evidence_floor_start_auroc=0.5,
            loss_setting="lc_la_unsupervised",
            train_attribution=["integrated_gradients"],
            ig_steps=2,
        )
        result = train(config, toy_subjects, checkpoint_dir=tmp_path / str(epochs))
        model, _ = training.load_model(result.last_checkpoint)
        assert isinstance(model, SmallCNN) and model.floored is not None
        # Each epoch's record says whether its weights had their floors.
        marks = [r["val_evidence_floored"] for r in result.history]
        assert marks[-1] == float(model.floored.any())
        return bool(model.floored.any()), [r["val_auroc"] for r in result.history]

    # After the first epoch no epoch has been validated yet: no floors, whatever its AUROC.
    assert floored(1)[0] is False
    # After the second, floors if and only if the first epoch reached the gate.
    started, aurocs = floored(2)
    assert started == (aurocs[0] >= 0.5)


@pytest.mark.parametrize(
    ("when", "quantile", "leak", "fitted_on"),
    [
        ("after_training", 1.0, 0.0, "train"),
        ("every_epoch", 1.0, 0.0, "train"),
        ("every_epoch", 0.5, 0.1, "train"),
        ("every_epoch", 1.0, 0.0, "validation"),
    ],
)
def test_a_run_with_evidence_floor_floors_best_and_last_on_its_healthy_subjects(
    toy_subjects: list[SubjectSample],
    tmp_path: Path,
    when: str,
    quantile: float,
    leak: float,
    fitted_on: str,
) -> None:
    from worker.ml.nets import SmallCNN
    from worker.ml.transforms import IMAGE_KEY, preprocess_for

    # The calibration would move the bias only: the floors are compared on the features.
    config = _config(
        epochs=2,
        evidence_floor=when,
        evidence_floor_quantile=quantile,
        evidence_floor_leak=leak,
        evidence_floor_subjects=fitted_on,
        loss_setting="lc_la_unsupervised",
        train_attribution=["integrated_gradients"],
        ig_steps=2,
        calibrate_logit=True,
    )
    result = train(config, toy_subjects, checkpoint_dir=tmp_path)
    transform = preprocess_for(config)
    split = "val" if fitted_on == "validation" else "train"
    healthy = torch.stack(
        [
            transform({IMAGE_KEY: str(s.image)})[IMAGE_KEY].as_tensor()
            for s in toy_subjects
            if s.split == split and s.label == 0
        ]
    )
    for path in (result.best_checkpoint, result.last_checkpoint):
        model, _ = training.load_model(path)
        assert isinstance(model, SmallCNN) and model.floored is not None
        assert model.floor is not None and model.evidence_floor_leak == leak
        detectors = model.head.weight[0] > 0
        assert torch.equal(model.floored, detectors) and bool(detectors.any())
        with torch.no_grad():
            features = model.eval().pooled_features(healthy)
        torch.testing.assert_close(
            model.floor[detectors],
            torch.quantile(features, quantile, dim=0)[detectors],
            rtol=1e-5,
            atol=1e-5,
        )
    if when == "after_training":
        assert result.test_metrics["evidence_floored_features"] == int(
            (training.load_model(result.best_checkpoint)[0].head.weight[0] > 0).sum()
        )
    else:  # fitted with each epoch's weights, saved with them
        assert "evidence_floored_features" not in result.test_metrics
    # Without the option, nothing is floored.
    plain = train(_config(epochs=1), toy_subjects, checkpoint_dir=tmp_path / "plain")
    assert "evidence_floored_features" not in plain.test_metrics


def test_baseline_logit_loss_holds_the_boundary_at_the_baseline_and_the_batch_on_its_sides() -> (
    None
):
    from types import SimpleNamespace

    from worker.ml.training.constrained import baseline_logit_loss

    class Fixed(torch.nn.Module):
        """F(x) = bias + 10 * mean(x): the zero image's logit is the bias."""

        def __init__(self, bias: float) -> None:
            super().__init__()
            self.bias = torch.nn.Parameter(torch.tensor(bias))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bias + 10.0 * x.flatten(1).mean(1)

    bce = torch.nn.functional.binary_cross_entropy_with_logits
    images = torch.ones(2, 1, *GRID)
    labels = torch.tensor([0.0, 1.0])
    right = torch.tensor([-4.0, 4.0])  # the batch's eval-mode logits, on the right sides

    zero_config = _config()

    def loss(
        bias: float,
        deployed: torch.Tensor,
        baseline: torch.Tensor | None = None,
        config: RunConfig = zero_config,
    ) -> float:
        model = Fixed(bias)
        loop = SimpleNamespace(baseline=baseline, model=model, config=config)
        return float(baseline_logit_loss(loop, images, deployed, labels))

    sides = float(bce(right, labels))
    assert loss(0.0, right) == pytest.approx(math.log(2.0) + sides)
    assert loss(2.0, right) == pytest.approx(loss(-2.0, right))
    assert loss(0.0, right) < loss(2.0, right) < loss(20.0, right)
    # Every logit of the batch below the boundary (the eval-mode drift of batch norm) costs.
    assert loss(0.0, right - 10.0) > loss(0.0, right) + 2.5
    # Far from the boundary the pull is bounded (|dL/dF(x')| <= 1/2), not quadratic.
    model = Fixed(20.0)
    baseline_logit_loss(
        SimpleNamespace(baseline=None, model=model, config=zero_config), images, right, labels
    ).backward()
    assert model.bias.grad is not None and float(model.bias.grad) == pytest.approx(0.5, abs=1e-6)
    # With a healthy baseline, the run's own reference is what is held at the boundary.
    reference = torch.full((1, 1, *GRID), 0.2)
    expected = float(bce(torch.tensor([2.0]), torch.tensor([0.5]))) + sides
    assert loss(0.0, right, reference) == pytest.approx(expected, rel=1e-6)
    # With the blur baseline, each image's own local mean: the images are uniform (1), so
    # their local means are too, and F there is bias + 10.
    blur = _config(attribution_baseline="blur")
    assert loss(-10.0, right, config=blur) == pytest.approx(math.log(2.0) + sides)
    assert loss(0.0, right, config=blur) == pytest.approx(
        float(bce(torch.tensor([10.0]), torch.tensor([0.5]))) + sides, rel=1e-6
    )


def test_a_run_with_baseline_logit_weight_keeps_the_zero_images_logit_near_the_boundary(
    toy_subjects: list[SubjectSample], tmp_path: Path
) -> None:
    def zero_logit(weight: float) -> float:
        config = _config(
            epochs=3,
            loss_setting="lc_la_unsupervised",
            train_attribution=["integrated_gradients"],
            ig_steps=2,
            attribution_normalise=True,
            normative_input=True,
            baseline_logit_weight=weight,
        )
        result = train(config, toy_subjects, checkpoint_dir=tmp_path / str(weight))
        assert all(_finite(h["train_loss_a"]) for h in result.history)
        model, _ = training.load_model(result.last_checkpoint)
        with torch.no_grad():
            return float(model(torch.zeros(1, 1, *GRID)).flatten()[0])

    # With the normative input the zero image reads as a deviation of -mean/sd everywhere;
    # left free, the constrained network puts its logit far above every subject's (the
    # regimes showed 20-25), which makes every map mostly negative.
    free, held = zero_logit(0.0), zero_logit(5.0)
    assert free > 5.0, free
    assert abs(held) < 1.0, (free, held)
