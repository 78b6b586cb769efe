"""The cohort view's statistics against scipy, on maps whose t-map is known."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.stats import ttest_1samp

from worker.ml.cohort import cohort_maps

SHAPE = (10, 12, 9)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _maps(folder: Path, n: int = 8) -> tuple[list[Path], np.ndarray]:
    """n maps = a signal (+1 in one block, -1 in another, 0 elsewhere) + unit noise; the
    first x slice is 0 in every map (zero variance)."""
    rng = np.random.default_rng(7)
    signal = np.zeros(SHAPE)
    signal[2:5, 2:6, 2:5] = 1.0
    signal[6:9, 6:10, 4:8] = -1.0
    paths, stack = [], []
    for i in range(n):
        a = (signal + rng.normal(0, 1, SHAPE)).astype(np.float32)
        a[0] = 0.0
        path = folder / f"m{i}.nii.gz"
        nib.save(nib.Nifti1Image(a, AFFINE), path)
        paths.append(path)
        stack.append(a)
    return paths, np.stack(stack).astype(np.float64)


def test_t_map_equals_scipy_one_sample_t(tmp_path: Path) -> None:
    paths, stack = _maps(tmp_path)
    result = cohort_maps(paths)
    expected = ttest_1samp(stack, 0.0, axis=0).statistic
    assert result.n == len(paths) and result.t.shape == SHAPE
    np.testing.assert_allclose(result.t[1:], expected[1:], rtol=1e-4, atol=1e-4)
    assert np.all(result.t[0] == 0.0)  # zero variance: t = 0, not NaN
    np.testing.assert_allclose(result.mean, stack.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(result.affine, AFFINE)
    # The signal shows with its sign: positive block red, negative block blue.
    assert result.t[2:5, 2:6, 2:5].mean() > 2.0
    assert result.t[6:9, 6:10, 4:8].mean() < -2.0


def test_maps_on_another_grid_are_resampled_to_the_first(tmp_path: Path) -> None:
    paths, _ = _maps(tmp_path, n=3)
    # The same field of view at half the resolution: 4 mm voxels.
    coarse = np.full((5, 6, 5), 2.0, np.float32)
    other = tmp_path / "coarse.nii.gz"
    nib.save(nib.Nifti1Image(coarse, np.diag([4.0, 4.0, 4.0, 1.0])), other)
    result = cohort_maps([*paths, other])
    assert result.mean.shape == SHAPE and result.n == 4
    first = np.asarray(nib.load(paths[0]).dataobj)
    inside = (slice(2, 6), slice(2, 6), slice(2, 6))  # well inside the coarse map's extent
    reference = np.mean(
        [np.asarray(nib.load(p).dataobj)[inside] for p in paths] + [np.full((4, 4, 4), 2.0)],
        axis=0,
    )
    np.testing.assert_allclose(result.mean[inside], reference, atol=1e-4)
    assert first.shape == SHAPE


def test_one_map_is_refused(tmp_path: Path) -> None:
    paths, _ = _maps(tmp_path, n=1)
    with pytest.raises(ValueError, match="at least two"):
        cohort_maps(paths)
