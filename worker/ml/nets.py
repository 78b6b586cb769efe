"""Classifier networks, built by registry name.

Every network maps ``(B, C, D, H, W)`` volumes to a pathological logit. A network may compute
a scalar per image or a spatial logit map (PatchGAN style); ``pathological_logit`` reduces
either to the ``(B,)`` score that the losses and attribution methods use (docs/method.md section 1),
and every registered network returns that ``(B,)`` score from ``forward``.

Every registered network also names the layer that Grad-CAM explains (its last convolutional
feature map) in a ``gradcam_layer_name`` attribute; ``gradcam_layer`` resolves it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers import Conv
from monai.networks.nets import DenseNet121, UNet, resnet10, resnet18
from torch import nn

__all__ = [
    "LogitColumn",
    "PatchGAN",
    "SegmentationUNet",
    "SmallCNN",
    "available_networks",
    "build_network",
    "build_unet",
    "gradcam_layer",
    "pathological_logit",
    "register_network",
]

NetworkBuilder = Callable[..., nn.Module]
_REGISTRY: dict[str, NetworkBuilder] = {}


def register_network(name: str) -> Callable[[NetworkBuilder], NetworkBuilder]:
    """Register a network builder under ``name`` (decorator).

    Args:
        name: Registry key, as stored in ``RunConfig.network``.

    Returns:
        A decorator that records the builder and returns it unchanged.
    """

    def decorator(builder: NetworkBuilder) -> NetworkBuilder:
        if name in _REGISTRY:
            raise ValueError(f"network {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorator


def available_networks() -> list[str]:
    """Return the registered network names, sorted."""
    return sorted(_REGISTRY)


def build_network(name: str, *, in_channels: int = 1, **kwargs) -> nn.Module:
    """Instantiate a registered network.

    Args:
        name: Registry key (see ``available_networks``).
        in_channels: Number of input image channels.
        **kwargs: Network-specific options.

    Returns:
        The network, in training mode, with freshly initialised weights (deterministic
        under ``torch.manual_seed``).

    Raises:
        KeyError: If ``name`` is not registered.
    """
    try:
        builder = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown network {name!r}; known: {available_networks()}") from None
    return builder(in_channels=in_channels, **kwargs)


def pathological_logit(output: torch.Tensor) -> torch.Tensor:
    """Reduce a network output to one pathological logit per image.

    Args:
        output: ``(B,)``, ``(B, 1)`` or a spatial logit map ``(B, 1, ...)``.

    Returns:
        ``(B,)``: the mean over all non-batch dimensions.
    """
    if output.ndim == 1:
        return output
    return output.reshape(output.shape[0], -1).mean(dim=1)


def gradcam_layer(model: nn.Module) -> nn.Module:
    """Return the layer whose activations Grad-CAM weighs (the last convolutional features).

    Args:
        model: A network built by ``build_network``.

    Returns:
        The submodule named by the network's ``gradcam_layer_name`` attribute.

    Raises:
        TypeError: If the network does not name a Grad-CAM layer.
    """
    name = getattr(model, "gradcam_layer_name", None)
    if not isinstance(name, str):
        raise TypeError(f"{type(model).__name__} does not name a Grad-CAM layer")
    return model.get_submodule(name)


_POOLINGS = frozenset({"avg", "max", "avgmax"})
_ACTIVATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "leakyrelu": ("leakyrelu", {"negative_slope": 0.2}),
    "relu": ("relu", {"inplace": False}),  # out of place: see _OUT_OF_PLACE_RELU below
}


class SmallCNN(nn.Module):
    """A small 3D CNN: conv blocks, global max pooling, one linear logit.

    Each block is Conv3d (kernel 3) -> norm -> LeakyReLU(0.2). By default the first block
    keeps the input grid (stride 1) and every later one halves it (stride 2), and the head
    takes the maximum of each channel over the last feature map.

    Why these defaults (docs/experiments.md, "Why L_C only was at chance"): on the synthetic MS
    data (lesions of 1-3 voxels radius, about 0.5% of the brain), the former design, four
    stride-2 blocks (8, 16, 32, 64) and global average pooling, fitted its 32 training subjects
    within a few epochs and stayed at chance on held-out subjects, whatever the norm, learning
    rate or intensity normalisation. Average pooling dilutes the lesion response by the
    number of positions; a stride-2 first block or a fourth block gives every position of the
    last map so much anatomy that its maximum follows the anatomy, not the lesions. A
    full-resolution first block, three blocks and max pooling (the default) separate the
    held-out subjects; ``pooling="avg"`` with the other defaults does not. The price: the
    maximum switches position along an Integrated Gradients path, so IG converges more slowly
    (random weights, grid (24, 28, 24): convergence delta 10% of F(x) - F(0) at 32 steps and
    1% at 128, against 0.3% and 0.04% with average pooling), and a pass costs about 5 times
    the former design's on the 48x56x48 grid.

    Batch norm is the default because in eval mode it is a fixed affine map, which keeps the
    network piecewise linear in its input; instance norm renormalises each image, which makes
    the logit nearly flat along the Integrated Gradients path near the zero baseline and then
    sharply varying, so IG converges poorly.

    Args:
        in_channels: Input channels.
        channels: Output channels of the successive blocks.
        norm: MONAI norm name (``"batch"``, ``"instance"``, ...).
        dropout: Dropout probability before the linear head.
        pooling: Global pooling of the last feature map: ``"max"``, ``"avg"``, or
            ``"avgmax"`` (both, concatenated: the head sees twice the channels).
        strides: Stride of each block; ``None``: 1 for the first block, 2 for the others.
        activation: ``"leakyrelu"`` (slope 0.2) or ``"relu"``.
        evidence_floor: Give the network a floor per pooled feature (a buffer, unset until
            ``set_evidence_floor``): a feature with a floor passes ``relu(pooled - floor)``
            to the head. The training engine sets the floors after every epoch or once after
            training (``RunConfig.evidence_floor``): each lesion detector (a feature with a positive
            head weight) gets the highest value it takes on the run's healthy subjects (of the
            training split, or of the validation split: ``RunConfig.evidence_floor_subjects``),
            so what it adds to the logit, and to the map, is only its response beyond what
            any of those healthy brains produced.
        evidence_floor_leak: Slope of a floored feature below its floor (0: ``relu``, the
            feature passes nothing there). With a slope ``a`` it passes ``a * (pooled - floor)``,
            a negative amount, so the training loss keeps a gradient through a detector that a
            subject does not lift above its floor.
    """

    gradcam_layer_name = "features"

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (4, 16, 32),
        norm: str = "batch",
        dropout: float = 0.0,
        pooling: str = "max",
        strides: Sequence[int] | None = None,
        activation: str = "leakyrelu",
        evidence_floor: bool = False,
        evidence_floor_leak: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= evidence_floor_leak < 1.0:
            raise ValueError(f"evidence_floor_leak must be in [0, 1), not {evidence_floor_leak}")
        self.evidence_floor_leak = float(evidence_floor_leak)
        if pooling not in _POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; known: {sorted(_POOLINGS)}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {sorted(_ACTIVATIONS)}")
        self.pooling = pooling
        if strides is None:
            strides = (1,) + (2,) * (len(channels) - 1)
        strides = tuple(int(n) for n in strides)
        if len(strides) != len(channels):
            raise ValueError(f"strides {strides} and channels {tuple(channels)} differ in length")
        blocks = []
        previous = in_channels
        for width, stride in zip(channels, strides, strict=True):
            blocks.append(
                Convolution(
                    spatial_dims=3,
                    in_channels=previous,
                    out_channels=width,
                    strides=stride,
                    kernel_size=3,
                    act=_ACTIVATIONS[activation],
                    norm=norm,
                )
            )
            previous = width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool3d(1) if pooling == "avg" else nn.AdaptiveMaxPool3d(1)
        self.avg_pool = nn.AdaptiveAvgPool3d(1) if pooling == "avgmax" else None
        self.dropout = nn.Dropout(dropout)
        pooled = previous * (2 if pooling == "avgmax" else 1)
        self.head = nn.Linear(pooled, 1)
        self.floor: torch.Tensor | None
        self.floored: torch.Tensor | None
        if evidence_floor:
            # Buffers, so that a checkpoint carries the floors with the weights.
            self.register_buffer("floor", torch.zeros(pooled))
            self.register_buffer("floored", torch.zeros(pooled, dtype=torch.bool))
        else:
            self.floor = self.floored = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the pathological logit of each image.

        Args:
            x: ``(B, C, D, H, W)`` volumes.

        Returns:
            ``(B,)`` logits.
        """
        features = self.pooled_features(x)  # (B, channels[-1]), twice that with avgmax
        if self.floor is not None and self.floored is not None:
            above = nn.functional.leaky_relu(features - self.floor, self.evidence_floor_leak)
            features = torch.where(self.floored, above, features)
        return self.head(self.dropout(features)).squeeze(1)  # (B,)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features ``(B, F)`` of ``x``, before any floor."""
        maps = self.features(x)
        features = self.pool(maps).flatten(1)
        if self.avg_pool is not None:
            features = torch.cat([self.avg_pool(maps).flatten(1), features], dim=1)
        return features

    @torch.no_grad()
    def set_evidence_floor(self, healthy_features: torch.Tensor, quantile: float = 1.0) -> int:
        """Floor each lesion detector at its largest response over healthy subjects, or at a
        quantile of those responses.

        Args:
            healthy_features: ``(R, F)`` pooled features of healthy subjects
                (``pooled_features``, as the network's input sees them).
            quantile: Which of the healthy responses is the floor: 1 is the largest; below 1,
                that quantile (linear interpolation), so a share ``1 - quantile`` of the
                healthy subjects pass some of their response.

        Returns:
            The number of features floored: those whose head weight is positive (a larger
            response raises the pathological logit); the others pass unchanged.
        """
        if self.floor is None or self.floored is None:
            raise ValueError("this network was built without evidence_floor")
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], not {quantile}")
        detectors = self.head.weight[0] > 0
        levels = torch.quantile(healthy_features, quantile, dim=0)  # quantile 1: the maximum
        self.floor.copy_(torch.where(detectors, levels, 0.0))
        self.floored.copy_(detectors)
        return int(detectors.sum())


@register_network("small_cnn")
def _build_small_cnn(*, in_channels: int = 1, **kwargs) -> nn.Module:
    return SmallCNN(in_channels=in_channels, **kwargs)


class PatchGAN(nn.Module):
    """PatchGAN-style 3D discriminator: a spatial map of pathological logits (docs/method.md section 3).

    The classifier of Wargnier-Dauchelle et al. (ISBI 2021, IEEE TMI 2023), after the
    pix2pix discriminator (Isola et al., CVPR 2017): four convolutions with kernel 4 and
    stride 2 and widths ``base_width * (1, 2, 4, 8)`` (64-128-256-512 by default), LeakyReLU
    0.2 after each, instance norm (affine) from the second on, then a convolution to one
    channel that gives a logit per patch. ``forward`` returns the mean of that map, one logit
    per image; ``logit_map`` returns the map itself.

    The strided convolutions pad by 2 rather than pix2pix's 1, so a side of n voxels becomes
    ``n // 2 + 1`` instead of ``n // 2``: on every grid a run allows (8 voxels a side or
    more) the feature maps never shrink to nothing, nor to the single voxel on which instance
    norm has no statistics. A (24, 28, 24) grid gives a (3, 3, 3) logit map, (48, 56, 48) a
    (4, 5, 4) one (``feature_shape``); the last convolution, kernel 3 and padding 1, keeps
    the size of the fourth layer's output.

    Integrated Gradients converges badly on this network from the zero baseline: instance
    norm divides each image by its own standard deviation, so the logit is nearly flat along
    the path close to the zero image and then changes sharply. Expect a large convergence
    delta with few steps: with random weights (base width 8, grid (24, 28, 24)) the delta is
    about 60% of F(x) - F(0) at 32 steps and 10% at 128, against 10% and 1% for SmallCNN
    (batch norm, max pooling; 1% and 0.2% with its former average pooling). Use more steps or a blurred baseline. Kept as published, because it is
    the network of the paper.

    Args:
        in_channels: Input channels.
        base_width: Channels of the first convolution; the others double it each layer.
            64 as published; 8 or 16 keep CPU runs and tests fast.
        spatial_dims: 3 for volumes, 2 for slices.
    """

    gradcam_layer_name = "features"

    def __init__(self, in_channels: int = 1, base_width: int = 64, spatial_dims: int = 3) -> None:
        super().__init__()
        if base_width < 1:
            raise ValueError(f"base_width must be positive, got {base_width}")
        widths = [base_width * 2**layer for layer in range(4)]
        blocks = []
        previous = in_channels
        for layer, width in enumerate(widths):
            normalised = layer > 0
            blocks.append(
                Convolution(
                    spatial_dims=spatial_dims,
                    in_channels=previous,
                    out_channels=width,
                    strides=2,
                    kernel_size=4,
                    padding=2,
                    act=("leakyrelu", {"negative_slope": 0.2}),
                    norm=("instance", {"affine": True}) if normalised else None,
                    # The norm's own shift makes a convolution bias redundant.
                    bias=not normalised,
                )
            )
            previous = width
        self.features = nn.Sequential(*blocks)
        self.head = Conv[Conv.CONV, spatial_dims](previous, 1, kernel_size=3, padding=1)

    @staticmethod
    def feature_shape(grid: Sequence[int]) -> tuple[int, ...]:
        """Spatial shape of the last feature map (and of the logit map) for an input grid."""
        shape = tuple(int(n) for n in grid)
        for _ in range(4):
            shape = tuple(n // 2 + 1 for n in shape)
        return shape

    def logit_map(self, x: torch.Tensor) -> torch.Tensor:
        """Return the patch logits ``(B, 1, *feature_shape(grid))`` of ``(B, C, *grid)``."""
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the pathological logit of each image, ``(B,)``: the mean patch logit."""
        return pathological_logit(self.logit_map(x))


class LogitColumn(nn.Module):
    """Adapt a network with one output unit, ``(B, 1)``, to the ``(B,)`` logit.

    The wrapped network sits under ``net``, so its state-dict keys are prefixed ``net.``.

    Args:
        net: Network returning ``(B, 1)``.
        gradcam_layer_name: Grad-CAM layer, as a submodule name of ``net``.
    """

    def __init__(self, net: nn.Module, gradcam_layer_name: str) -> None:
        super().__init__()
        self.net = net
        self.gradcam_layer_name = f"net.{gradcam_layer_name}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``(B,)`` logits of ``(B, C, D, H, W)`` volumes."""
        return self.net(x)[:, 0]


# MONAI's DenseNet and ResNet default to in-place ReLUs; Captum's GuidedBackprop and DeepLift
# hook every ReLU and fail on in-place ones. Out-of-place ReLUs compute the same function
# with the same parameters.
_OUT_OF_PLACE_RELU = _ACTIVATIONS["relu"]


@register_network("patchgan")
def _build_patchgan(*, in_channels: int = 1, **kwargs) -> nn.Module:
    return PatchGAN(in_channels=in_channels, **kwargs)


@register_network("densenet121")
def _build_densenet121(*, in_channels: int = 1, **kwargs) -> nn.Module:
    # Its input must be at least 32 voxels per side (five halvings before global pooling).
    net = DenseNet121(
        spatial_dims=3, in_channels=in_channels, out_channels=1, act=_OUT_OF_PLACE_RELU, **kwargs
    )
    # features ends with the last batch norm, before the ReLU and pooling of class_layers.
    return LogitColumn(net, "features")


@register_network("resnet18")
def _build_resnet18(*, in_channels: int = 1, **kwargs) -> nn.Module:
    net = resnet18(
        spatial_dims=3,
        n_input_channels=in_channels,
        num_classes=1,
        act=_OUT_OF_PLACE_RELU,
        **kwargs,
    )
    return LogitColumn(net, "layer4")


@register_network("resnet10")
def _build_resnet10(*, in_channels: int = 1, **kwargs) -> nn.Module:
    net = resnet10(
        spatial_dims=3,
        n_input_channels=in_channels,
        num_classes=1,
        act=_OUT_OF_PLACE_RELU,
        **kwargs,
    )
    return LogitColumn(net, "layer4")


# --------------------------------------------------------------------------- segmentation

UNET_CHANNELS = (8, 16, 32)
UNET_STRIDES = (2, 2)
LESION_PRIOR = 0.02


def build_unet(
    *,
    in_channels: int = 1,
    channels: Sequence[int] = UNET_CHANNELS,
    strides: Sequence[int] = UNET_STRIDES,
    num_res_units: int = 1,
    norm: str = "instance",
) -> nn.Module:
    """MONAI's 3D UNet with one output channel: the foreground logit of every voxel.

    Small widths (8-16-32) keep CPU runs short; each stride halves the grid, so every side
    of the working grid must be divisible by ``2 ** len(strides)`` (4 by default; the run
    config checks it).

    Returns:
        A module mapping ``(B, in_channels, D, H, W)`` to logits ``(B, 1, D, H, W)``.
    """
    return SegmentationUNet(
        UNet(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=1,
            channels=tuple(channels),
            strides=tuple(strides),
            num_res_units=num_res_units,
            norm=norm,
        )
    )


class SegmentationUNet(nn.Module):
    """A UNet plus one learnable output bias, initialised at the logit of a lesion prior.

    Lesions fill a few percent of a brain; starting from logits near 0 (half the volume
    called lesion), Dice + CE spends its first hundred steps only learning that prior. A
    bias at ``log(p / (1 - p))`` (the prior-probability initialisation of Lin et al., "Focal
    loss for dense object detection", ICCV 2017) starts where that ends.

    Args:
        unet: The network, ``(B, C, D, H, W)`` -> ``(B, 1, D, H, W)`` logits.
        prior: Initial foreground probability of every voxel.
    """

    def __init__(self, unet: nn.Module, prior: float = LESION_PRIOR) -> None:
        super().__init__()
        self.unet = unet
        self.bias = nn.Parameter(torch.tensor(math.log(prior / (1.0 - prior))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x) + self.bias


@register_network("unet")
def _build_unet(*, in_channels: int = 1, **kwargs) -> nn.Module:
    # A segmentation network (logits per voxel; worker.ml.segmentation trains and explains it).
    return build_unet(in_channels=in_channels, **kwargs)
