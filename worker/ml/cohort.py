"""The cohort view: the mean signed map and the voxel-wise one-sample t-map of a group's maps.

The maps are brought onto one grid (the first subject's: ``nilearn.image.resample_to_img``,
continuous interpolation; a map already on it is taken as is), and nilearn's second-level GLM
(``SecondLevelModel`` with an intercept-only design, no smoothing) gives the t statistic of
the intercept in every voxel: mean / (sd / sqrt(n)), sd with n - 1 degrees of freedom, which
is what ``scipy.stats.ttest_1samp`` gives too. The mask is every voxel of the grid (relevance
outside the brain is part of what a cohort map must show). Voxels where all maps agree
exactly (zero variance, e.g. a background every map leaves at 0) get t = 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.glm.second_level import SecondLevelModel
from nilearn.image import resample_to_img

from attrivue_core.io import load_image

__all__ = ["CohortResult", "cohort_maps", "on_reference_grid"]


@dataclass(frozen=True)
class CohortResult:
    """The group's maps summarised on the reference grid."""

    mean: np.ndarray
    t: np.ndarray
    affine: np.ndarray
    n: int


def on_reference_grid(paths: Sequence[Path]) -> list[nib.Nifti1Image]:
    """The maps as float32 images on the first one's grid (resampled where they differ)."""
    reference = load_image(paths[0])
    shape, affine = reference.shape[:3], np.asarray(reference.affine)
    images = []
    for path in paths:
        img = load_image(path)
        data = np.asarray(img.get_fdata(dtype=np.float32)).reshape(img.shape[:3])
        img = nib.Nifti1Image(data, np.asarray(img.affine))
        if img.shape[:3] != shape or not np.allclose(img.affine, affine, atol=1e-4):
            img = resample_to_img(
                img,
                nib.Nifti1Image(np.zeros(shape, np.float32), affine),
                interpolation="continuous",
                force_resample=True,
                copy_header=True,
            )
        images.append(img)
    return images


def cohort_maps(paths: Sequence[Path]) -> CohortResult:
    """Mean and one-sample t-map (H0: mean relevance 0) of at least two maps.

    Raises:
        ValueError: Fewer than two maps.
    """
    if len(paths) < 2:
        raise ValueError(f"a t-map needs at least two maps, got {len(paths)}")
    images = on_reference_grid(paths)
    stack = np.stack([np.asarray(img.dataobj, dtype=np.float64) for img in images])
    affine = np.asarray(images[0].affine)
    mask = nib.Nifti1Image(np.ones(stack.shape[1:], np.uint8), affine)
    design = pd.DataFrame({"intercept": np.ones(len(images))})
    model = SecondLevelModel(mask_img=mask, smoothing_fwhm=None)
    with warnings.catch_warnings():  # zero-variance voxels divide by zero; they are set to 0
        warnings.simplefilter("ignore", RuntimeWarning)
        model.fit(images, design_matrix=design)
        t_img = model.compute_contrast("intercept", output_type="stat")
    t = np.asarray(t_img.get_fdata(), dtype=np.float64).reshape(stack.shape[1:])
    constant = np.ptp(stack, axis=0) == 0
    t[constant | ~np.isfinite(t)] = 0.0
    return CohortResult(
        mean=stack.mean(axis=0).astype(np.float32),
        t=t.astype(np.float32),
        affine=affine,
        n=len(images),
    )
