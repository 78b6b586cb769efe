"""A brain mask computed from the image, for data that comes without one.

"Brain" used to mean "non-zero voxels", which holds for the project's own skull-stripped
synthetic subjects and for nothing else: a real scan has a noisy background, so every voxel of
the grid is non-zero and the constraint, the metrics and ``/stats`` all counted the background
as brain. The mask here is what a user would draw roughly by hand:

1. smooth the image (a Gaussian of about 2 mm, so noise does not cross the threshold);
2. threshold it half-way between the background level (the 0.5th percentile) and Otsu's
   threshold (``skimage.filters.threshold_otsu``, on the smoothed intensities clipped to their
   0.5-99.5 percentiles so that a few very bright voxels do not move it): Otsu alone tends to
   split CSF from the other tissues rather than the head from the background;
3. keep the largest connected component (drops a detached artefact stripe or noise specks);
4. fill holes slice by slice and in 3D (ventricles and dark T1 lesions are inside the brain).

A user's own mask always wins over this one (``brain_mask_or_compute``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

__all__ = ["compute_brain_mask", "brain_mask_or_compute"]

_SMOOTH_MM = 2.0
_PERCENTILES = (0.5, 99.5)


def compute_brain_mask(
    image: np.ndarray, spacing: Sequence[float] | None = None, *, smooth_mm: float = _SMOOTH_MM
) -> np.ndarray:
    """Return a boolean brain (head) mask of a 3D MR image.

    Args:
        image: 3D intensities (any real dtype; NaN and inf count as background).
        spacing: Voxel sizes in mm along the three axes (``None``: 1 mm), used to size the
            smoothing kernel.
        smooth_mm: Standard deviation of the Gaussian smoothing, in mm (0 disables it).

    Returns:
        Boolean array of the image's shape. An image without contrast (constant) gives its
        non-zero voxels, so an all-zero image gives an empty mask.

    Raises:
        ValueError: If ``image`` is not 3D.

    Example:
        >>> brain = compute_brain_mask(volume, spacing=(1.0, 1.0, 1.0))
        >>> brain.mean()  # share of the grid inside the brain
    """
    data = np.asarray(image, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"a brain mask needs a 3D image, got shape {data.shape}")
    data = np.where(np.isfinite(data), data, 0.0).astype(np.float32, copy=False)
    zooms = np.ones(3) if spacing is None else np.asarray(spacing, dtype=float)
    if zooms.shape != (3,) or np.any(zooms <= 0):
        raise ValueError(f"spacing must be three positive sizes, got {spacing!r}")
    smoothed = data
    if smooth_mm > 0:
        smoothed = ndimage.gaussian_filter(data, sigma=smooth_mm / zooms, mode="nearest")
    low, high = np.percentile(smoothed, _PERCENTILES)
    if not high > low:
        return data != 0
    # Each intermediate volume is dropped once used: the peak memory is a few copies of the
    # image, not one per step (the import computes masks of large volumes in the API process).
    del data
    clipped = np.clip(smoothed, low, high)
    # Otsu splits tissue classes (CSF from grey and white matter) as readily as head from
    # background; half-way between the background level and Otsu's threshold keeps the CSF.
    threshold = low + 0.5 * (threshold_otsu(clipped) - low)
    del clipped
    head = smoothed > threshold
    del smoothed
    head = _largest_component(head)
    head = ndimage.binary_closing(head, structure=np.ones((3, 3, 3), dtype=bool), iterations=1)
    return _fill_holes(head)


def brain_mask_or_compute(
    image: np.ndarray, given: np.ndarray | None, spacing: Sequence[float] | None = None
) -> np.ndarray:
    """The user's brain mask where one was given (non-zero voxels), otherwise a computed one."""
    if given is not None:
        given = np.asarray(given)
        if given.shape != np.asarray(image).shape:
            raise ValueError(
                f"brain mask shape {given.shape} differs from the image's {np.shape(image)}"
            )
        return given != 0
    return compute_brain_mask(image, spacing)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    filled = ndimage.binary_fill_holes(mask)
    # Holes open to one side in 3D (a ventricle touching a cut) are closed slice by slice.
    for axis in range(3):
        filled = np.stack(
            [ndimage.binary_fill_holes(s) for s in np.moveaxis(filled, axis, 0)], axis=axis
        )
    return filled.astype(bool)
