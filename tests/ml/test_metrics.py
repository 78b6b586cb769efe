"""Tests of worker.ml.metrics against cases small enough to count by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worker.ml.metrics import (
    attribution_report,
    best_threshold,
    classification_metrics,
    deletion_insertion,
    dice_at_threshold,
    dice_top_k,
    healthy_pathological_share,
    lesion_mass,
    pointing_game,
    positive_part,
    randomisation_sanity,
    regression_metrics,
    subject_attribution_metrics,
    voxel_auprc,
    voxel_auroc,
)


def _volume(rows: list[list[float]]) -> np.ndarray:
    """A 4x4 grid as a (4, 4, 1) volume."""
    return np.array(rows, dtype=np.float64)[..., None]


# Positive mass 3 + 2 + 1 + 0.5 = 6.5, of which 6 lies in the lesion; the lesion's fourth voxel
# carries strong healthy relevance (-5), which must not count as pathological.
MAP = _volume(
    [
        [3, 2, 0, 0],
        [1, -5, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0.5],
    ]
)
LESION = _volume(
    [
        [1, 1, 0, 0],
        [1, 1, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]
)
TOP_ROWS = _volume(
    [
        [1, 1, 1, 1],
        [1, 1, 1, 1],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]
)


def _col(values: list[float]) -> np.ndarray:
    """A (n, 1, 1) volume from a list."""
    return np.array(values, dtype=np.float64).reshape(-1, 1, 1)


# --------------------------------------------------------------------------- classification


def test_classification_metrics_by_hand() -> None:
    metrics = classification_metrics([0, 0, 1, 1], [0.1, 0.6, 0.7, 0.9])

    assert metrics["auroc"] == 1.0
    assert metrics["accuracy"] == 0.75
    assert metrics["sensitivity"] == 1.0
    assert metrics["specificity"] == 0.5
    assert metrics["balanced_accuracy"] == 0.75
    assert metrics["n"] == 4


def test_logits_with_threshold_zero_match_probabilities() -> None:
    probabilities = np.array([0.1, 0.6, 0.4, 0.9])
    logits = np.log(probabilities / (1 - probabilities))
    labels = [0, 0, 1, 1]

    assert classification_metrics(labels, logits, threshold=0.0) == pytest.approx(
        classification_metrics(labels, probabilities)
    )


@pytest.mark.parametrize(
    ("scores", "auroc"),
    [([0.1, 0.2, 0.8, 0.9], 1.0), ([0.9, 0.8, 0.2, 0.1], 0.0), ([0.5, 0.5, 0.5, 0.5], 0.5)],
)
def test_classification_auroc_of_perfect_reversed_and_flat_rankings(
    scores: list[float], auroc: float
) -> None:
    assert classification_metrics([0, 0, 1, 1], scores)["auroc"] == auroc


def test_classification_metrics_nan_when_one_class() -> None:
    metrics = classification_metrics([1, 1], [0.2, 0.9])

    assert math.isnan(metrics["auroc"])
    assert math.isnan(metrics["balanced_accuracy"])
    assert math.isnan(metrics["specificity"])
    assert metrics["sensitivity"] == 0.5
    assert metrics["accuracy"] == 0.5


@pytest.mark.parametrize(("labels", "scores"), [([], []), ([0, 1], [0.5]), ([0, 2], [0.1, 0.9])])
def test_classification_metrics_reject_bad_input(labels: list[int], scores: list[float]) -> None:
    with pytest.raises(ValueError):
        classification_metrics(labels, scores)


def test_regression_metrics_by_hand() -> None:
    metrics = regression_metrics([1, 2, 3, 4], [1, 2, 3, 5])

    assert metrics["mae"] == pytest.approx(0.25)
    assert metrics["rmse"] == pytest.approx(0.5)
    assert metrics["spearman"] == pytest.approx(1.0)
    assert metrics["pearson"] == pytest.approx(np.corrcoef([1, 2, 3, 4], [1, 2, 3, 5])[0, 1])
    assert math.isnan(regression_metrics([1, 2], [3, 3])["pearson"])


# --------------------------------------------------------------------------- Dice


def test_positive_part_drops_healthy_relevance() -> None:
    np.testing.assert_array_equal(positive_part(np.array([-2.0, 0.0, 1.5])), [0.0, 0.0, 1.5])


@pytest.mark.parametrize(
    ("threshold", "dice"),
    [
        (0.0, 2 * 3 / (4 + 4)),  # selects 3, 2, 1, 0.5: three hits
        (0.75, 2 * 3 / (3 + 4)),  # 3, 2, 1
        (1.5, 2 * 2 / (2 + 4)),  # 3, 2
        (2.5, 2 * 1 / (1 + 4)),  # 3
        (10.0, 0.0),  # nothing selected
    ],
)
def test_dice_at_threshold(threshold: float, dice: float) -> None:
    assert dice_at_threshold(MAP, LESION, threshold) == pytest.approx(dice)


def test_dice_at_threshold_rejects_negative_threshold() -> None:
    with pytest.raises(ValueError, match="healthy"):
        dice_at_threshold(MAP, LESION, -1.0)


def test_dice_is_nan_for_an_empty_lesion() -> None:
    assert math.isnan(dice_at_threshold(MAP, np.zeros_like(LESION), 0.0))
    assert math.isnan(dice_top_k(MAP, np.zeros_like(LESION), 10.0))


@pytest.mark.parametrize(
    ("percent", "dice"),
    [
        (25.0, 2 * 3 / (4 + 4)),  # 4 of 16 voxels: 3, 2, 1, 0.5
        (12.5, 2 * 2 / (2 + 4)),  # 2 voxels: 3, 2
        (5.0, 2 * 1 / (1 + 4)),  # 0.8 rounds to 1 voxel: 3
        (50.0, 2 * 3 / (4 + 4)),  # 8 voxels, but only 4 carry pathological relevance
        (100.0, 2 * 3 / (4 + 4)),
    ],
)
def test_dice_top_k(percent: float, dice: float) -> None:
    assert dice_top_k(MAP, LESION, percent) == pytest.approx(dice)


def test_dice_top_k_counts_voxels_within_the_brain() -> None:
    # 25 % of the 8 brain voxels is 2 voxels: 3 and 2.
    assert dice_top_k(MAP, LESION, 25.0, brain_mask=TOP_ROWS) == pytest.approx(2 * 2 / (2 + 4))


@pytest.mark.parametrize("percent", [0.0, -5.0, 101.0])
def test_dice_top_k_rejects_bad_percent(percent: float) -> None:
    with pytest.raises(ValueError):
        dice_top_k(MAP, LESION, percent)


def test_masks_must_match_the_map_shape() -> None:
    with pytest.raises(ValueError, match="shape"):
        dice_at_threshold(MAP, LESION[:2], 0.0)
    with pytest.raises(ValueError, match="shape"):
        lesion_mass(MAP, LESION, brain_mask=TOP_ROWS[:, :2])


# --------------------------------------------------------------------------- best threshold

# Lesion voxels carry 3 and 2, four outside voxels 1: Dice is 0.5 at 0, 1 at 1.5, 2/3 at 2.5.
CLEAN_MAP = _col([3, 2, 1, 1, 1, 1])
CLEAN_LESION = _col([1, 1, 0, 0, 0, 0])


def test_best_threshold_from_given_candidates() -> None:
    assert best_threshold([CLEAN_MAP], [CLEAN_LESION], [0.0, 1.5, 2.5]) == 1.5


def test_best_threshold_default_candidates_reach_the_best_dice() -> None:
    threshold = best_threshold([CLEAN_MAP], [CLEAN_LESION])

    assert 1.0 <= threshold < 2.0
    assert dice_at_threshold(CLEAN_MAP, CLEAN_LESION, threshold) == 1.0


def test_best_threshold_maximises_mean_dice_like_brute_force() -> None:
    rng = np.random.default_rng(0)
    maps = [rng.normal(size=(5, 4, 3)) for _ in range(3)]
    masks = [(rng.random((5, 4, 3)) < 0.3).astype(np.uint8) for _ in range(3)]
    masks.append(np.zeros((5, 4, 3)))  # an empty lesion is left out of the mean
    maps.append(rng.normal(size=(5, 4, 3)))
    candidates = np.linspace(0.0, 2.0, 41)

    chosen = best_threshold(maps, masks, candidates)

    means = [
        np.mean([dice_at_threshold(a, m, t) for a, m in zip(maps[:3], masks[:3], strict=True)])
        for t in candidates
    ]
    assert chosen == candidates[int(np.argmax(means))]


def test_best_threshold_needs_a_lesion() -> None:
    with pytest.raises(ValueError, match="lesion"):
        best_threshold([MAP], [np.zeros_like(LESION)])


# --------------------------------------------------------------------------- voxel ranking


@pytest.mark.parametrize(
    ("attribution", "mask", "auroc", "auprc"),
    [
        ([3, 2, 1, 0], [1, 1, 0, 0], 1.0, 1.0),  # perfect ranking
        ([3, 2, 1, 0], [0, 0, 1, 1], 0.0, 0.5 * (1 / 3) + 0.5 * (2 / 4)),  # reversed
        ([3, 0, 1, 0], [1, 1, 0, 0], 2.5 / 4, None),  # pairs: 1 + 1 + 0 + 0.5 (tie)
        ([3, -9, 1, -9], [1, 1, 0, 0], 2.5 / 4, None),  # healthy relevance ties with zero
    ],
)
def test_voxel_auroc_and_auprc(
    attribution: list[float], mask: list[int], auroc: float, auprc: float | None
) -> None:
    assert voxel_auroc(_col(attribution), _col(mask)) == pytest.approx(auroc)
    if auprc is not None:
        assert voxel_auprc(_col(attribution), _col(mask)) == pytest.approx(auprc)


def test_voxel_ranking_undefined_cases_are_nan() -> None:
    a = _col([1, 2, 3])
    assert math.isnan(voxel_auroc(a, _col([0, 0, 0])))
    assert math.isnan(voxel_auroc(a, _col([1, 1, 1])))
    assert math.isnan(voxel_auprc(a, _col([0, 0, 0])))


def test_voxel_auroc_of_the_reference_map() -> None:
    # Lesion scores 3, 2, 1, 0 against eleven zeros and 0.5: 36 + 5.5 of 48 pairs.
    assert voxel_auroc(MAP, LESION) == pytest.approx(41.5 / 48)
    # Precision 1 at recall 1/4, 2/4, 3/4, then 4/16 at recall 1.
    assert voxel_auprc(MAP, LESION) == pytest.approx(0.75 + 0.25 * 4 / 16)


# --------------------------------------------------------------------------- masses


@pytest.mark.parametrize(
    ("brain_mask", "mass"),
    [(None, 6 / 6.5), (TOP_ROWS, 1.0)],  # the brain mask drops the 0.5 outside the lesion
)
def test_lesion_mass(brain_mask: np.ndarray | None, mass: float) -> None:
    assert lesion_mass(MAP, LESION, brain_mask=brain_mask) == pytest.approx(mass)


def test_lesion_mass_is_zero_without_positive_mass() -> None:
    assert lesion_mass(-np.abs(MAP), LESION) == 0.0


@pytest.mark.parametrize(
    ("attribution", "brain_mask", "share"),
    [
        (MAP, None, 6.5 / 11.5),  # positive 6.5, absolute 6.5 + 5
        (MAP, TOP_ROWS, 6.0 / 11.0),
        (_col([1, -3]), None, 0.25),
        (_col([-1, -3]), None, 0.0),
        (_col([0, 0]), None, 0.0),  # no relevance at all: no pathological relevance either
    ],
)
def test_healthy_pathological_share(
    attribution: np.ndarray, brain_mask: np.ndarray | None, share: float
) -> None:
    assert healthy_pathological_share(attribution, brain_mask) == pytest.approx(share)


def test_strong_negative_relevance_in_the_lesion_is_not_pathological() -> None:
    # Large |A| in the lesion, but all of it healthy; the only positive voxels lie outside.
    attribution = _volume([[-9, -9, 0, 0], [-9, -9, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])

    assert dice_at_threshold(attribution, LESION, 0.0) == 0.0
    assert dice_top_k(attribution, LESION, 25.0) == 0.0
    assert lesion_mass(attribution, LESION) == 0.0
    assert voxel_auroc(attribution, LESION) < 0.5
    assert not pointing_game(attribution, LESION)
    # Absolute values would have called this map perfect.
    assert voxel_auroc(np.abs(attribution), LESION) > 0.9


# --------------------------------------------------------------------------- pointing game

# Maximum 9 at (3, 3); the nearest lesion voxel (1, 1) is sqrt(8) ~ 2.83 voxels away.
FAR_PEAK = _volume([[3, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 9]])


@pytest.mark.parametrize(
    ("attribution", "tolerance", "brain_mask", "hit"),
    [
        (MAP, 0.0, None, True),
        (FAR_PEAK, 0.0, None, False),
        (FAR_PEAK, 2.0, None, False),
        (FAR_PEAK, 3.0, None, True),
        (FAR_PEAK, 0.0, TOP_ROWS, True),  # the peak outside the brain is ignored
        (-np.abs(MAP), 0.0, None, False),  # no pathological relevance to point with
        (np.zeros_like(MAP), 0.0, None, False),
    ],
)
def test_pointing_game(
    attribution: np.ndarray, tolerance: float, brain_mask: np.ndarray | None, hit: bool
) -> None:
    assert pointing_game(attribution, LESION, tolerance=tolerance, brain_mask=brain_mask) is hit


def test_pointing_game_misses_with_an_empty_lesion() -> None:
    assert pointing_game(MAP, np.zeros_like(LESION)) is False


# --------------------------------------------------------------------------- deletion

WEIGHTS = _col([4, 3, -2, 1])


def _linear(x: np.ndarray) -> float:
    return float((WEIGHTS * x).sum())


def _linear_batch(x: np.ndarray) -> np.ndarray:
    return (WEIGHTS[None] * x).reshape(x.shape[0], -1).sum(axis=1)


def test_deletion_and_insertion_on_a_linear_model() -> None:
    image = np.ones_like(WEIGHTS)
    # For a linear model with a zero baseline, w * x is the exact attribution; the order of
    # removal is 4, 3, 1, then -2.
    result = deletion_insertion(_linear, image, WEIGHTS * image, steps=4)

    np.testing.assert_allclose(result["fractions"], [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(result["deletion"], [6, 2, -1, -2, 0])
    np.testing.assert_allclose(result["insertion"], [0, 4, 7, 8, 6])
    # Trapezoids of width 1/4: (8 + 1 - 3 - 2) / 2 and (4 + 11 + 15 + 14) / 2.
    assert result["deletion_auc"] == pytest.approx(0.25 * 2)
    assert result["insertion_auc"] == pytest.approx(0.25 * 22)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 16])
def test_deletion_batched_matches_one_by_one(batch_size: int) -> None:
    image = np.ones_like(WEIGHTS)
    single = deletion_insertion(_linear, image, WEIGHTS, steps=4)
    batched = deletion_insertion(_linear_batch, image, WEIGHTS, steps=4, batch_size=batch_size)

    for key in ("deletion", "insertion"):
        np.testing.assert_allclose(batched[key], single[key])


def test_deletion_with_array_baseline_and_brain_mask() -> None:
    image = np.ones_like(WEIGHTS)
    baseline = np.full_like(WEIGHTS, 0.5)
    brain = _col([0, 1, 1, 0])  # only the voxels weighted 3 and -2 may change

    result = deletion_insertion(
        _linear, image, WEIGHTS, steps=2, baseline=baseline, brain_mask=brain
    )

    # Deletion: 6, then 3 loses half its weight (-1.5), then -2 loses half (+1).
    np.testing.assert_allclose(result["deletion"], [6, 4.5, 5.5])
    # Insertion starts from 0.5 inside the brain: 4 + 1.5 - 1 + 1 = 5.5.
    np.testing.assert_allclose(result["insertion"], [5.5, 7, 6])


def test_deletion_fractions_are_exact_when_steps_do_not_divide() -> None:
    result = deletion_insertion(_linear, np.ones_like(WEIGHTS), WEIGHTS, steps=3)

    np.testing.assert_allclose(result["fractions"], [0, 0.25, 0.75, 1])


def test_deletion_rejects_a_model_returning_the_wrong_count() -> None:
    with pytest.raises(ValueError, match="scores"):
        deletion_insertion(
            lambda x: np.zeros(1), np.ones_like(WEIGHTS), WEIGHTS, steps=2, batch_size=3
        )


# --------------------------------------------------------------------------- sanity


@pytest.mark.parametrize(
    ("trained", "randomised", "signed", "absolute", "changed"),
    [
        ([1, 2, 3, 4], [1, 2, 3, 4], 1.0, 1.0, False),
        ([1, 2, 3, 4], [4, 3, 2, 1], -1.0, -1.0, True),
        ([1, -2, 3, -4], [-1, 2, -3, 4], -1.0, 1.0, False),  # a sign flip keeps |A|
        ([1, 2, 3, 4], [0, 0, 0, 0], math.nan, math.nan, True),  # a dead model's map
        ([0, 0, 0, 0], [0, 0, 0, 0], math.nan, math.nan, False),
    ],
)
def test_randomisation_sanity(
    trained: list[float], randomised: list[float], signed: float, absolute: float, changed: bool
) -> None:
    result = randomisation_sanity(_col(trained), _col(randomised))

    assert result["spearman_signed"] == pytest.approx(signed, nan_ok=True)
    assert result["spearman_abs"] == pytest.approx(absolute, nan_ok=True)
    assert result["changed"] is changed


def test_randomisation_sanity_flags_independent_maps() -> None:
    rng = np.random.default_rng(1)
    assert randomisation_sanity(rng.normal(size=(6, 6, 6)), rng.normal(size=(6, 6, 6)))["changed"]


# --------------------------------------------------------------------------- aggregates


def test_subject_attribution_metrics_of_the_reference_map() -> None:
    metrics = subject_attribution_metrics(MAP, LESION, threshold=1.5, top_k_percent=25.0)

    assert metrics == pytest.approx(
        {
            "dice_at_threshold": 2 / 3,
            "dice_top_k": 0.75,
            "voxel_auroc": 41.5 / 48,
            "voxel_auprc": 0.8125,
            "lesion_mass": 6 / 6.5,
            "pointing_game": 1.0,
        }
    )


def test_attribution_report_aggregates_by_label() -> None:
    maps = [MAP, FAR_PEAK, _col([1, -3]), MAP]
    masks = [LESION, LESION, None, np.zeros_like(LESION)]
    labels = [1, 1, 0, 1]  # the last pathological subject has no lesion voxels

    report = attribution_report(maps, masks, labels, threshold=1.5, top_k_percent=25.0)

    first = subject_attribution_metrics(MAP, LESION, threshold=1.5, top_k_percent=25.0)
    second = subject_attribution_metrics(FAR_PEAK, LESION, threshold=1.5, top_k_percent=25.0)
    for key, value in first.items():
        assert report[key] == pytest.approx((value + second[key]) / 2), key
    assert report["pointing_game"] == 0.5
    assert report["healthy_share"] == 0.25
    assert (report["n_pathological"], report["n_pathological_skipped"]) == (2, 1)
    assert report["n_healthy"] == 1
    assert report["threshold"] == 1.5


def test_attribution_report_means_over_no_subjects_are_nan() -> None:
    report = attribution_report([MAP], [None], [0], threshold=0.0)

    assert math.isnan(report["dice_at_threshold"])
    assert report["healthy_share"] == pytest.approx(6.5 / 11.5)


def test_attribution_report_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="length"):
        attribution_report([MAP], [LESION, LESION], [1], threshold=0.0)
