"""Baselines that depend on the image they explain (``RunConfig.attribution_baseline="blur"``).

A fixed baseline (the zero image, the mean healthy image) is one tensor for every subject. The
local mean is computed from each image: a Gaussian average of the brain's own voxels around
each voxel, so that x - x' is the image's local contrast, not its intensity. A detector of
bright spots then explains a healthy bright voxel and its darker surround with the same sign
(both differ from their local mean in the direction the detector weighs them), where from the
zero image the two get opposite signs and the map's red and blue cancel.
"""

from __future__ import annotations

import torch
from monai.networks.layers import GaussianFilter

__all__ = ["LocalMeanBaseline", "local_mean"]


def local_mean(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """The brain-restricted Gaussian local mean of each image, detached.

    Args:
        images: ``(B, C, D, H, W)``; a voxel belongs to the brain where any channel is
            non-zero (the crop zeroes the background).
        sigma: Standard deviation of the Gaussian, in voxels of the working grid.

    Returns:
        ``(B, C, D, H, W)``: inside the brain, sum(G * x) / sum(G * brain) (a normalised
        convolution: voxels outside the brain neither count nor darken the mean near its
        edge); 0 outside the brain, as in the image, so x - x' is 0 there.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    with torch.no_grad():
        x = images.detach().float()
        brain = (x != 0).any(dim=1, keepdim=True).float()  # (B, 1, D, H, W)
        smooth = GaussianFilter(spatial_dims=x.ndim - 2, sigma=sigma, truncated=4.0).to(x.device)
        batch, channels = x.shape[:2]
        flat = x.reshape(batch * channels, 1, *x.shape[2:])
        numerator = smooth(flat * brain.repeat_interleave(channels, dim=0)).reshape(x.shape)
        weight = smooth(brain)  # (B, 1, D, H, W)
        mean = numerator / weight.clamp_min(1e-6)
        return (mean * brain).to(images.dtype)


class LocalMeanBaseline:
    """A baseline computed from the images it explains: ``baseline(x)`` is ``local_mean(x)``."""

    def __init__(self, sigma: float) -> None:
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return local_mean(images, self.sigma)

    def __repr__(self) -> str:
        return f"LocalMeanBaseline(sigma={self.sigma})"
