"""The shortcut report's counterfactual check and flags, with known answers.

Subjects are small synthetic brains (tests.helpers.brain_volume); the pathological ones carry a
lesion and, like site A of worker/research/shortcut.py, a bright stripe above the head. Two
hand-built classifiers read the working grid the run's preprocessing gives: one looks only at
the stripe (a shortcut), the other only at the centre of the brain, where the lesions are.
Erasing the stripe's box (given in scanner mm) must take the first one's AUROC from 1 to 0.5
and raise the region flag, and leave the second one's AUROC and logits unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from attrivue_core.configs import RunConfig
from attrivue_core.shortcut import (
    box_region,
    outside_brain_shares,
    shortcut_flags,
    top_relevance_region,
)
from backend.services.predictions import auroc
from tests.helpers import AFFINE, brain_volume, write_nifti
from worker.ml.shortcut import counterfactual_summary, erase_region, logits_with_region_erased

SHAPE = (16, 20, 16)
# The stripe: every x, the middle half of y, the top z slice but one (outside the ellipsoid).
STRIPE = (slice(None), slice(5, 15), slice(14, 15))
STRIPE_VALUE = 300.0
CONFIG = RunConfig(grid=SHAPE, brain="nonzero")


class StripeReader(nn.Module):
    """Logit = mean of the working grid on the stripe's voxels - 2 (z-scored intensity)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, :, 5:15, 14].mean(dim=(1, 2)) - 2.0


class CentreReader(nn.Module):
    """Logit = max of the working grid over the brain's centre (where lesions lie) - 2.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, 5:11, 7:13, 5:11].amax(dim=(1, 2, 3)) - 2.5


def _stripe_box_mm() -> list[list[float]]:
    """The stripe's voxels as a box in scanner mm (voxel centres, half a voxel of margin)."""
    low = AFFINE @ np.array([0, 5, 14, 1.0])
    high = AFFINE @ np.array([SHAPE[0] - 1, 14, 14, 1.0])
    corners = np.stack([low[:3], high[:3]])
    margin = 2.0  # half of the 4 mm voxels
    return [list(corners.min(0) - margin), list(corners.max(0) + margin)]


@pytest.fixture(scope="module")
def subjects(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[int, Path]]:
    folder = tmp_path_factory.mktemp("stripe")
    out = []
    for i in range(8):
        label = i % 2
        image, _ = brain_volume(SHAPE, seed=i, lesion=bool(label))
        if label:
            image[STRIPE] = STRIPE_VALUE
        out.append((label, write_nifti(folder / f"s{i}.nii.gz", image)))
    return out


def _check(model: nn.Module, subjects: list[tuple[int, Path]], fill: str) -> dict:
    box = _stripe_box_mm()
    logits = logits_with_region_erased(
        model,
        CONFIG,
        [
            (path, None, lambda image, affine: box_region(image.shape, affine, box))
            for _, path in subjects
        ],
        fill,  # type: ignore[arg-type]
    )
    labels = [label for label, _ in subjects]
    summary = counterfactual_summary(labels, logits, region="stripe box", fill=fill)  # type: ignore[arg-type]
    assert summary["n"] == len(subjects) and summary["n_without_region"] == 0
    assert summary["before"]["auroc"] == auroc(labels, [s.before for s in logits])
    return {"logits": logits, "counterfactual": summary}


def test_the_box_in_mm_is_the_stripe() -> None:
    region = box_region(SHAPE, AFFINE, _stripe_box_mm())
    expected = np.zeros(SHAPE, bool)
    expected[STRIPE] = True
    assert np.array_equal(region, expected)


@pytest.mark.parametrize("fill", ["background", "mean"])
def test_a_stripe_shortcut_model_is_flagged(subjects, fill: str) -> None:
    checked = _check(StripeReader(), subjects, fill)
    cf = checked["counterfactual"]
    assert cf["before"]["auroc"] == 1.0
    assert cf["after"]["auroc"] <= 0.6
    assert all(s.region_voxels == 160 for s in checked["logits"])
    # The pathological subjects' logits fall by several units; the healthy ones' move by less
    # than one (their stripe voxels held background noise, which the fill replaces).
    changes = [
        (label, s.after - s.before)
        for (label, _), s in zip(subjects, checked["logits"], strict=True)
    ]
    assert max(c for label, c in changes if label == 1) < -3.0
    assert max(abs(c) for label, c in changes if label == 0) < 1.0
    flags = shortcut_flags(site_metrics=[], counterfactual=cf, outside_brain=None)
    assert [f["kind"] for f in flags] == ["region"]
    assert "1.00" in flags[0]["reason"] and "stripe box" in flags[0]["reason"]


def test_a_model_that_reads_the_lesions_is_not_flagged(subjects) -> None:
    checked = _check(CentreReader(), subjects, "background")
    cf = checked["counterfactual"]
    assert cf["before"]["auroc"] == 1.0 and cf["after"]["auroc"] == 1.0
    assert shortcut_flags(site_metrics=[], counterfactual=cf, outside_brain=None) == []


def test_fills() -> None:
    image = np.zeros((6, 6, 6), np.float32)
    brain = np.zeros_like(image, dtype=bool)
    brain[1:5, 1:5, 1:5] = True
    image[brain] = 10.0
    image[0, 0, 0] = 1000.0  # a bright artefact outside the brain
    region = np.zeros_like(brain)
    region[0, 0, 0] = True
    assert erase_region(image, region, "mean", brain=brain)[0, 0, 0] == 10.0
    assert erase_region(image, region, "background", brain=brain)[0, 0, 0] == 0.0
    blurred = erase_region(image, region, "blur", brain=brain, blur_sigma_mm=2.0)[0, 0, 0]
    assert 0.0 < blurred < 1000.0
    untouched = erase_region(image, region, "mean", brain=brain)
    assert np.array_equal(untouched[~region], image[~region])


def test_relevance_outside_the_brain_and_top_region() -> None:
    brain = np.zeros((4, 4, 4), bool)
    brain[:2] = True
    a = np.zeros((4, 4, 4))
    a[0, 0, 0] = 1.0  # inside
    a[3, 3, 3] = 3.0  # outside
    a[3, 0, 0] = -4.0  # outside, healthy
    shares = outside_brain_shares(a, brain)
    assert shares["abs"] == pytest.approx(7 / 8)
    assert shares["positive"] == pytest.approx(3 / 4)
    assert shares["volume"] == pytest.approx(0.5)
    flags = shortcut_flags(
        site_metrics=[],
        counterfactual=None,
        outside_brain={"mean_abs_share": shares["abs"], "mean_positive_share": shares["positive"]},
    )
    assert [f["kind"] for f in flags] == ["outside_brain"] and "75%" in flags[0]["reason"]
    top = top_relevance_region(a, 2 / 64)
    assert set(zip(*np.nonzero(top), strict=True)) == {(3, 3, 3), (3, 0, 0)}


def test_a_site_far_from_the_others_is_flagged() -> None:
    sites = [
        {"site": None, "auroc": 0.8, "others_auroc": None},
        {"site": "A", "auroc": 1.0, "others_auroc": 0.55},
        {"site": "B", "auroc": 0.55, "others_auroc": 1.0},
        {"site": "C", "auroc": None, "others_auroc": 0.7},
    ]
    flags = shortcut_flags(site_metrics=sites, counterfactual=None, outside_brain=None)
    assert [(f["kind"], f["site"]) for f in flags] == [("site", "A"), ("site", "B")]
    close = [{"site": "A", "auroc": 0.9, "others_auroc": 0.75}]
    assert shortcut_flags(site_metrics=close, counterfactual=None, outside_brain=None) == []
