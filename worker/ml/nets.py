"""Classifier networks, built by registry name.

Every network maps ``(B, C, D, H, W)`` volumes to a pathological logit. A network may return
a scalar per image or a spatial logit map (PatchGAN style); ``pathological_logit`` reduces
either to the ``(B,)`` score that the losses and attribution methods use (method.md section 1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn

__all__ = [
    "SmallCNN",
    "available_networks",
    "build_network",
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


class SmallCNN(nn.Module):
    """A small 3D CNN: strided conv blocks, global average pooling, one linear logit.

    Each block is Conv3d (kernel 3, stride 2) -> norm -> LeakyReLU(0.2), halving the grid.
    Batch norm is the default because in eval mode it is a fixed affine map, which keeps the
    network piecewise linear in its input; instance norm renormalises each image, which makes
    the logit nearly flat along the Integrated Gradients path near the zero baseline and then
    sharply varying, so IG converges poorly.

    Args:
        in_channels: Input channels.
        channels: Output channels of the successive blocks.
        norm: MONAI norm name (``"batch"``, ``"instance"``, ...).
        dropout: Dropout probability before the linear head.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (8, 16, 32, 64),
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        blocks = []
        previous = in_channels
        for width in channels:
            blocks.append(
                Convolution(
                    spatial_dims=3,
                    in_channels=previous,
                    out_channels=width,
                    strides=2,
                    kernel_size=3,
                    act=("leakyrelu", {"negative_slope": 0.2}),
                    norm=norm,
                )
            )
            previous = width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(previous, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the pathological logit of each image.

        Args:
            x: ``(B, C, D, H, W)`` volumes.

        Returns:
            ``(B,)`` logits.
        """
        features = self.pool(self.features(x)).flatten(1)  # (B, channels[-1])
        return self.head(self.dropout(features)).squeeze(1)  # (B,)


@register_network("small_cnn")
def _build_small_cnn(*, in_channels: int = 1, **kwargs) -> nn.Module:
    return SmallCNN(in_channels=in_channels, **kwargs)
