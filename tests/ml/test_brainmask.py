"""The computed brain mask: the brain on a noisy background, not every non-zero voxel."""

from __future__ import annotations

import numpy as np
import pytest

from attrivue_core.brainmask import brain_mask_or_compute, compute_brain_mask
from worker.ml.synthetic import SyntheticConfig, make_subject


@pytest.fixture(scope="module")
def subject():
    config = SyntheticConfig(grid=(40, 48, 40), spacing_mm=4.5, lesion_intensity=-0.6)
    return make_subject(config, pathological=True, rng=np.random.default_rng(3))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.mark.parametrize("background", [(0.0, 0.0), (0.1, 0.08), (0.2, 0.15)])
def test_mask_finds_the_brain_on_a_noisy_background(subject, background):
    truth = subject.image != 0
    mean, std = background
    noise = np.random.default_rng(0).normal(mean, std, subject.image.shape)
    image = (subject.image + noise).astype(np.float32)
    mask = compute_brain_mask(image, (4.5, 4.5, 4.5))
    if std > 0:
        assert (image != 0).mean() > 0.99  # "non-zero voxels" would be the whole grid
    assert _dice(mask, truth) > 0.75
    assert 0.5 * truth.mean() < mask.mean() < 1.5 * truth.mean()
    # Dark (T1-hypointense) lesions are inside the brain: the hole filling keeps them.
    lesion = subject.mask > 0
    assert (mask & lesion).sum() >= 0.95 * lesion.sum()


def test_detached_bright_stripe_is_not_brain(subject):
    image = subject.image.copy()
    image[:, 10:30, -3:-1] = 3.0  # an artefact at the edge of the field of view
    mask = compute_brain_mask(image, (4.5, 4.5, 4.5))
    assert not mask[:, 10:30, -3:-1].any()


def test_given_mask_wins_and_shapes_are_checked(subject):
    given = np.zeros(subject.image.shape, dtype=np.uint8)
    given[5:10, 5:10, 5:10] = 1
    assert brain_mask_or_compute(subject.image, given).sum() == 125
    with pytest.raises(ValueError, match="shape"):
        brain_mask_or_compute(subject.image, given[:-1])
    with pytest.raises(ValueError, match="3D"):
        compute_brain_mask(subject.image[0])
    assert not compute_brain_mask(np.zeros((8, 8, 8))).any()
