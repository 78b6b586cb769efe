"""A normative input channel: each voxel's deviation from the healthy training subjects.

A radiologist reads a T1-hypointense lesion as "darker than white matter is here". On the
working grid a dark lesion has the intensity of grey matter, so a small network that sees the
image alone cannot tell it from cortex or the deep grey nuclei, and the default classifier
stayed at chance on the dark regimes (docs/experiments.md, "Dark lesions"). Normative
modelling gives the network the missing reference: each voxel's z-score against the healthy
subjects of the training split, on the same grid,

    z(x) = (G * x - mean) / max(sd, floor)   inside the reference brain, 0 outside,

where ``G`` is a Gaussian smoothing (sigma 1 voxel) that absorbs small misalignments between
heads, ``mean`` and ``sd`` are the voxel-wise mean and standard deviation of ``G * x`` over the
healthy training images, and the reference brain is where at least half of them have tissue
(a non-zero voxel). The network gets ``[x, z(x)]`` as its input channels.

The mask is the reference's, fixed, not the subject's own (``x != 0``): ``z`` is then affine in
``x``, so the network stays continuous along an attribution path. With the subject's own mask,
``z`` would jump at the zero image (from ``-mean / sd`` just after it to 0 at it) and Integrated
Gradients from the zero image would lose its completeness (``sum(A) = F(x) - F(0)``).

``NormativeInput`` computes ``z`` inside the model from the image, so the model still takes
the one image a user uploads, every attribution map stays on the image's own channels, and the
maps and the training constraint go through ``z`` by back-propagation like through any other
layer (``z`` is affine in ``x`` inside the brain). The reference statistics are buffers: they
are saved with the weights in ``best.pt`` and restored with them.

The reference is only as good as the alignment of the heads: the brain-mask crop of the
preprocessing (``brain="mask"``) brings every brain to the same bounding box; heads that
differ by more than a few voxels after it widen ``sd`` and weaken ``z``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers import GaussianFilter
from monai.networks.layers.convutils import gaussian_1d
from torch import nn

__all__ = [
    "SD_FLOOR",
    "SMOOTHING_SIGMA",
    "NormativeInput",
    "ShiftedSumGaussian",
    "normative_statistics",
]

# Smoothing of the image before the comparison, in voxels of the working grid.
SMOOTHING_SIGMA = 1.0
# Lower bound of the reference's standard deviation, in the units of the normalised image
# (z-scored: 1 is the brain's own spread). Where the healthy subjects agree closely (deep white
# matter) it keeps noise from becoming large deviations.
SD_FLOOR = 0.2


class ShiftedSumGaussian(GaussianFilter):
    """MONAI's Gaussian filter (its kernel, its zero padding, its state dict), applied as a
    weighted sum of shifted copies along each axis instead of MONAI's one-channel ``conv3d``.

    The result is the same to float rounding (``tests/ml/test_normative.py``). On a CPU the
    one-channel ``conv3d`` of a 9-tap kernel is slow, slower than the small classifier it
    feeds; the filter runs in every forward and back-propagation of a network with the
    normative input (training steps, the constraint's double back-propagation, IG maps).
    The two are timed side by side by ``python -m bench.bench_normative``
    (docs/benchmarks.md, section "normative").
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for axis, sigma in enumerate(self.sigma):
            kernel = gaussian_1d(sigma, truncated=self.truncated, approx=self.approx)
            out = _filter_along(out, kernel.to(device=x.device, dtype=x.dtype), 2 + axis)
        return out


def _filter_along(x: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """``x`` convolved with the odd-length 1-D ``kernel`` along ``dim``, zero padded."""
    taps = int(kernel.numel())
    radius = taps // 2
    length = x.shape[dim]
    pad = [0, 0] * (x.ndim - 2)
    side = 2 * (x.ndim - 1 - dim)  # F.pad lists the last dimension first
    pad[side] = pad[side + 1] = radius
    padded = F.pad(x, pad)
    out = kernel[0] * padded.narrow(dim, 0, length)
    for tap in range(1, taps):
        out = out + kernel[tap] * padded.narrow(dim, tap, length)
    return out


def _smoother() -> nn.Module:
    return ShiftedSumGaussian(spatial_dims=3, sigma=SMOOTHING_SIGMA)


def normative_statistics(
    images: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The voxel-wise mean and floored standard deviation of the smoothed healthy images, and
    the reference brain.

    Args:
        images: ``(R, C, D, H, W)`` healthy training images, preprocessed as in training
            (without augmentation).

    Returns:
        ``(mean, sd, inside)``, each ``(C, D, H, W)``; ``sd`` is at least ``SD_FLOOR``;
        ``inside`` (bool) is where at least half of the images are non-zero.

    Raises:
        ValueError: If ``images`` holds no image or is not five-dimensional.
    """
    if images.ndim != 5 or images.shape[0] == 0:
        raise ValueError(
            "the normative reference needs at least one healthy training image of shape "
            f"(C, D, H, W); got a batch of shape {tuple(images.shape)}"
        )
    with torch.no_grad():
        smooth = _smoother().to(images.device)(images.float())
        mean = smooth.mean(dim=0)
        sd = smooth.std(dim=0, unbiased=False).clamp_min(SD_FLOOR)
        inside = (images != 0).float().mean(dim=0) >= 0.5
    return mean, sd, inside


class NormativeInput(nn.Module):
    """A network fed with the image and its normative z-map, ``[x, z(x)]``.

    Args:
        net: The network; it takes ``2 * channels`` input channels.
        channels: The image's channels (modalities).
        grid: The working grid ``(D, H, W)``: the shape of the reference buffers.

    The reference starts as mean 0, sd 1, the whole grid inside (``z`` is then the smoothed
    image) until ``fit`` is called with the healthy training images; a checkpoint's state dict restores it.
    """

    mean: torch.Tensor
    sd: torch.Tensor
    inside: torch.Tensor
    fitted: torch.Tensor

    def __init__(self, net: nn.Module, channels: int, grid: tuple[int, int, int]) -> None:
        super().__init__()
        self.net = net
        self.smooth = _smoother()
        shape = (int(channels), *(int(n) for n in grid))
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("sd", torch.ones(shape))
        self.register_buffer("inside", torch.ones(shape, dtype=torch.bool))
        self.register_buffer("fitted", torch.tensor(False))
        inner = getattr(net, "gradcam_layer_name", None)
        if isinstance(inner, str):
            self.gradcam_layer_name = f"net.{inner}"

    @torch.no_grad()
    def fit(self, healthy: torch.Tensor) -> None:
        """Set the reference from the healthy training images ``(R, C, D, H, W)``."""
        if tuple(healthy.shape[1:]) != tuple(self.mean.shape):
            raise ValueError(
                f"healthy images of shape {tuple(healthy.shape[1:])} do not match the "
                f"reference's {tuple(self.mean.shape)} (channels and working grid)"
            )
        mean, sd, inside = normative_statistics(healthy.to(self.mean.device))
        self.mean.copy_(mean)
        self.sd.copy_(sd)
        self.inside.copy_(inside)
        self.fitted.fill_(True)

    def deviation(self, x: torch.Tensor) -> torch.Tensor:
        """The normative z-map of ``x`` ``(B, C, D, H, W)``: 0 outside the reference brain."""
        z = (self.smooth(x) - self.mean) / self.sd
        return torch.where(self.inside, z, torch.zeros_like(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output on ``[x, z(x)]``."""
        return self.net(torch.cat([x, self.deviation(x)], dim=1))
