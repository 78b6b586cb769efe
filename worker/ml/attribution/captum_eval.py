"""Evaluation attribution maps with Captum, stored in the subject's native space.

The map is signed (method.md section 1): A > 0 pushes toward "pathological" (red), A < 0
toward "healthy" (blue). Nothing here takes absolute values of a map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
import torch
from captum.attr import IntegratedGradients
from monai.transforms import GaussianSmooth
from nibabel.spatialimages import SpatialImage
from torch import nn

from worker.ml.configs import AttributionConfig, RunConfig
from worker.ml.nets import pathological_logit
from worker.ml.transforms import IMAGE_KEY, preprocess, to_native

__all__ = ["AttributionResult", "attribute_subject", "map_stats"]

# Tolerance (world units) between the affine recovered by inverting the preprocessing and
# the affine in the image header; larger means the inverse went wrong.
_AFFINE_ATOL = 1e-3


@dataclass
class AttributionResult:
    """A signed attribution map on the subject's native grid, with its diagnostics.

    Attributes:
        map: float32 map with the native image's spatial shape; A > 0 is pathological
            relevance, A < 0 healthy relevance.
        affine: 4x4 affine of the native image (the map overlays it voxel for voxel).
        convergence_delta: |sum(A) - (F(x) - F(x'))| on the working grid (IG completeness).
        logit: Pathological logit F(x) of the image.
        probability: sigmoid(F(x)).
        baseline_logit: F(x') of the baseline.
        stats: Summary of the native map (see ``map_stats``) plus ``grid_sum`` (sum of the
            map on the working grid) and ``relative_delta`` (delta / |F(x) - F(x')|, ``None``
            when the baseline scores the same as the image).
    """

    map: np.ndarray
    affine: np.ndarray
    convergence_delta: float
    logit: float
    probability: float
    baseline_logit: float
    stats: dict[str, float | None] = field(default_factory=dict)


class _LogitModel(nn.Module):
    """Expose a classifier as Captum expects: one scalar per example, shape ``(B,)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pathological_logit(self.model(x))


def attribute_subject(
    model: nn.Module,
    config: RunConfig,
    image_path: Path,
    attribution: AttributionConfig,
    *,
    device: str | torch.device = "cpu",
) -> AttributionResult:
    """Compute the Integrated Gradients map of one subject and bring it to native space.

    The image is preprocessed exactly as in training (without augmentation), attributed on
    the working grid, and the map is resampled back through the inverse of the preprocessing.

    Args:
        model: Trained classifier (moved to ``device`` and put in eval mode; its training
            mode is restored afterwards).
        config: The run configuration the model was trained with (grid, intensity).
        image_path: NIfTI image of the subject.
        attribution: Method settings.
        device: Device to compute on.

    Returns:
        The signed native-space map with its affine, logits and diagnostics.
    """
    transform = preprocess(config.grid, augment=False, intensity=config.intensity)
    image = transform({IMAGE_KEY: str(image_path)})[IMAGE_KEY]  # MetaTensor (1, *grid)
    x = image.as_tensor()[None].to(device)  # (1, 1, *grid)
    baseline = _baseline(x, attribution)  # (1, 1, *grid)

    was_training = model.training
    forward = _LogitModel(model).to(device).eval()
    try:
        attr_grid, delta = _integrated_gradients(forward, x, baseline, attribution)
        with torch.no_grad():
            logit = float(forward(x)[0])
            baseline_logit = float(forward(baseline)[0])
    finally:
        model.train(was_training)

    native_map, recovered_affine = to_native(attr_grid[0], image, transform)
    header_image = cast(SpatialImage, nib.load(str(image_path)))  # reads the header only
    affine = np.asarray(header_image.affine, dtype=np.float64)
    if not np.allclose(recovered_affine, affine, atol=_AFFINE_ATOL):
        raise RuntimeError(
            f"inverting the preprocessing gave affine\n{recovered_affine}\n"
            f"instead of the image's\n{affine}"
        )
    grid_sum = float(attr_grid.sum())
    gap = abs(logit - baseline_logit)
    stats = {
        **map_stats(native_map),
        "grid_sum": grid_sum,
        # None rather than inf: the stats go into JSON columns.
        "relative_delta": delta / gap if gap > 0 else None,
    }
    return AttributionResult(
        map=native_map,
        affine=affine,
        convergence_delta=delta,
        logit=logit,
        probability=float(torch.sigmoid(torch.tensor(logit))),
        baseline_logit=baseline_logit,
        stats=stats,
    )


def map_stats(attribution_map: np.ndarray) -> dict[str, float]:
    """Signed summary of a map.

    Args:
        attribution_map: Signed attribution map.

    Returns:
        ``min``, ``max``, ``positive_mass`` (sum of the positive part, >= 0),
        ``negative_mass`` (sum of the negative part, <= 0; so the two add up to the total)
        and ``mean_abs`` (mean magnitude, a scale for display).
    """
    a = np.asarray(attribution_map, dtype=np.float64)
    return {
        "min": float(a.min()),
        "max": float(a.max()),
        "positive_mass": float(a[a > 0].sum()),
        "negative_mass": float(a[a < 0].sum()),
        "mean_abs": float(np.abs(a).mean()),
    }


def _baseline(x: torch.Tensor, attribution: AttributionConfig) -> torch.Tensor:
    """The reference image x' of IG, same shape as ``x`` ``(1, 1, *grid)``."""
    if attribution.baseline == "zero":
        return torch.zeros_like(x)
    if attribution.baseline == "blur":
        # GaussianSmooth works channel-first without the batch dimension.
        smooth = GaussianSmooth(sigma=attribution.blur_sigma)
        return torch.as_tensor(smooth(x[0])).to(x)[None]
    raise ValueError(f"unknown baseline {attribution.baseline!r}")


def _integrated_gradients(
    forward: nn.Module,
    x: torch.Tensor,
    baseline: torch.Tensor,
    attribution: AttributionConfig,
) -> tuple[torch.Tensor, float]:
    """Run Captum's Integrated Gradients on the pathological logit.

    Args:
        forward: Maps ``(N, 1, *grid)`` to ``(N,)`` logits.
        x: Input ``(1, 1, *grid)``.
        baseline: Reference ``(1, 1, *grid)``.
        attribution: Steps, quadrature and chunk size.

    Returns:
        The signed map ``(1, *grid)`` (channel kept, batch dropped) and the absolute
        completeness gap.
    """
    ig = IntegratedGradients(forward, multiply_by_inputs=True)
    # Captum evaluates steps * batch = steps interpolated images, (steps, 1, *grid), in chunks
    # of internal_batch_size; target=None because forward already yields one scalar per image.
    attributions, delta = ig.attribute(
        x,
        baselines=baseline,
        target=None,
        n_steps=attribution.steps,
        method=attribution.riemann_method,
        internal_batch_size=attribution.internal_batch_size,
        return_convergence_delta=True,
    )
    # attributions: (1, 1, *grid), signed; delta: (1,) = sum(A) - (F(x) - F(x')).
    return attributions.detach()[0].cpu(), float(delta.abs().max())
