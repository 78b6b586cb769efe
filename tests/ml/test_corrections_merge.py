"""Corrections merged into target maps: labels, precedence between reviews, provenance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attrivue_core.corrections import (
    MISSED,
    SPURIOUS,
    Correction,
    base_target,
    decode_target,
    encode_target,
    load_target,
    merge_corrections,
    save_target,
    target_mode,
)
from worker.ml.losses import target_map, target_mode_for

SHAPE = (6, 5, 4)


def _mask() -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[1:3, 1:3, 1:3] = 1
    return mask


def _c(review_id: int, reviewer_id: int, at: str, **voxels: list[tuple[int, int, int]]):
    labels = np.zeros(SHAPE, np.uint8)
    for ijk in voxels.get("missed", []):
        labels[ijk] = MISSED
    for ijk in voxels.get("spurious", []):
        labels[ijk] = SPURIOUS
    return Correction(
        labels=labels,
        review_id=review_id,
        reviewer_id=reviewer_id,
        reviewer=f"u{reviewer_id}",
        attribution_id=100 + review_id,
        method="integrated_gradients",
        created_at=at,
    )


def test_base_target_matches_the_trainers_target_map() -> None:
    mask = _mask()
    for setting in ("la_only", "lc_la_supervised", "lc_la_unsupervised", "lc_only"):
        assert target_mode(setting) == target_mode_for(setting)
    for mode in ("supervised", "weakly_supervised"):
        for label in (0, 1):
            ours = base_target(label, mask, mode, SHAPE)
            theirs = target_map(
                torch.tensor([float(label)]),
                torch.from_numpy(mask.astype(np.float32))[None, None],
                mode=mode,  # type: ignore[arg-type]
            )[0, 0].numpy()
            np.testing.assert_array_equal(ours, theirs)
    # A pathological subject without a mask is unconstrained in both modes.
    assert np.isnan(base_target(1, None, "supervised", SHAPE)).all()


def test_missed_lesion_sets_one_spurious_sets_zero_the_rest_keeps_the_run_targets() -> None:
    base = base_target(1, _mask(), "supervised", SHAPE)
    merged = merge_corrections(
        base, [_c(1, 1, "2026-01-01", missed=[(4, 4, 3)], spurious=[(1, 1, 1)])]
    )
    t = merged.target
    assert t[4, 4, 3] == 1.0 and base[4, 4, 3] == 0.0  # missed lesion
    assert t[1, 1, 1] == 0.0 and base[1, 1, 1] == 1.0  # spurious relevance inside the mask
    untouched = np.ones(SHAPE, bool)
    untouched[4, 4, 3] = untouched[1, 1, 1] = False
    np.testing.assert_array_equal(t[untouched], base[untouched])
    assert merged.stats["changed_voxels"] == 2
    assert merged.stats["lesion_voxels"] == 1 and merged.stats["healthy_voxels"] == 1
    # Corrections also constrain voxels the mode left free (weakly supervised lesion subject).
    free = merge_corrections(
        base_target(1, None, "weakly_supervised", SHAPE), [_c(1, 1, "t", spurious=[(0, 0, 0)])]
    ).target
    assert free[0, 0, 0] == 0.0 and np.isnan(free).sum() == free.size - 1


def test_precedence_between_and_within_reviewers() -> None:
    base = np.zeros(SHAPE, np.float32)
    v = (2, 2, 2)
    a_old = _c(1, 1, "2026-01-01T10:00", missed=[v, (0, 0, 0)])
    a_new = _c(2, 1, "2026-01-02T10:00", spurious=[v])  # reviewer 1 changes their mind on v
    b = _c(3, 2, "2026-01-01T12:00", missed=[v])  # reviewer 2 says missed lesion on v

    # Within reviewer 1, the later review replaces the statement on v, keeps (0,0,0).
    alone = merge_corrections(base, [a_new, a_old])
    assert alone.target[v] == 0.0 and alone.target[0, 0, 0] == 1.0

    # Reviewers 1 (now: spurious) and 2 (missed) disagree on v.
    abstain = merge_corrections(base, [a_old, a_new, b], policy="abstain")
    assert np.isnan(abstain.target[v]) and abstain.stats["contested_voxels"] == 1
    assert abstain.target[0, 0, 0] == 1.0
    missed = merge_corrections(base, [a_old, a_new, b], policy="missed_wins")
    assert missed.target[v] == 1.0 and missed.stats["contested_voxels"] == 0
    latest = merge_corrections(base, [b, a_new, a_old], policy="latest")
    assert latest.target[v] == 0.0  # review 2 (reviewer 1, 2 January) is the latest on v
    # Agreement is not contested.
    agree = merge_corrections(base, [b, _c(4, 1, "2026-01-03", missed=[v])])
    assert agree.target[v] == 1.0 and agree.stats["contested_voxels"] == 0

    with pytest.raises(ValueError, match="unknown precedence policy"):
        merge_corrections(base, [b], policy="loudest")  # type: ignore[arg-type]


def test_provenance_names_reviewer_map_and_review_and_credits_the_decision() -> None:
    base = np.zeros(SHAPE, np.float32)
    v = (2, 2, 2)
    a_old = _c(1, 1, "2026-01-01T10:00", missed=[v, (0, 0, 0)])
    a_new = _c(2, 1, "2026-01-02T10:00", spurious=[v])
    b = _c(3, 2, "2026-01-01T12:00", missed=[(5, 4, 3)], spurious=[(0, 1, 0)])
    merged = merge_corrections(base, [b, a_new, a_old])
    rows = {row["review_id"]: row for row in merged.provenance}
    assert [row["review_id"] for row in merged.provenance] == [1, 3, 2]  # review order
    assert rows[1]["reviewer"] == "u1" and rows[1]["attribution_id"] == 101
    assert rows[1]["method"] == "integrated_gradients"
    assert rows[1]["missed_voxels"] == 2 and rows[1]["spurious_voxels"] == 0
    # Review 1's statement on v was superseded by review 2; it still decides (0,0,0).
    assert rows[1]["decided_voxels"] == 1
    assert rows[2]["decided_voxels"] == 1  # v
    assert rows[3]["decided_voxels"] == 2
    assert merged.stats["reviewers"] == 2 and merged.stats["reviews"] == 3
    assert sum(r["decided_voxels"] for r in merged.provenance) == (
        merged.stats["lesion_voxels"] + merged.stats["healthy_voxels"]
    )


def test_bad_corrections_are_refused_and_targets_round_trip(tmp_path) -> None:
    base = np.zeros(SHAPE, np.float32)
    wrong = Correction(labels=np.zeros((2, 2, 2), np.uint8), review_id=9, reviewer_id=1)
    with pytest.raises(ValueError, match="review 9: correction grid"):
        merge_corrections(base, [wrong])
    bad = Correction(labels=np.full(SHAPE, 3, np.uint8), review_id=8, reviewer_id=1)
    with pytest.raises(ValueError, match="unknown correction labels"):
        merge_corrections(base, [bad])

    target = np.array([[[0.0, 1.0, np.nan]]], np.float32)
    np.testing.assert_array_equal(encode_target(target), [[[0, 1, 255]]])
    np.testing.assert_array_equal(decode_target(encode_target(target)), target)
    path = save_target(target, np.diag([2.0, 2.0, 2.0, 1.0]), tmp_path / "t.nii.gz")
    np.testing.assert_array_equal(load_target(path), target)
