"""Batch norm folded into the convolution before it, for eval-mode graphs that are
back-propagated twice.

In eval mode a batch norm is the affine map ``y = (x - mean) * s + beta`` with
``s = gamma / sqrt(var + eps)`` from its running statistics, so a convolution followed by it
is one convolution with weights ``W * s`` (per output channel) and bias
``(b - mean) * s + beta``. Computed from the live parameters, the folded weights carry the
gradient to ``W``, ``b``, ``gamma`` and ``beta``, so the function and every derivative are
those of the unfolded pair (up to float rounding), while the graph loses the batch norm's
forward, backward and double backward on full-size activations: the training attribution in
eval mode (docs/method.md section 3, ``attribution_mode``) is such a graph.

A pair is folded when a ``nn.Sequential`` runs a convolution (not transposed, zero padding)
and then, as its next child or the first leaf of that child (MONAI's ``Convolution`` block:
``conv`` then ``adn.N``), a batch norm in eval mode with running statistics. Any other layout
(a ``forward`` written by hand, as in ResNets) is left as it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

__all__ = ["foldable_pairs", "folded_batch_norm"]

_CONVOLUTIONS: dict[int, Callable[..., torch.Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _runs_children_in_order(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _first_leaf(module: nn.Module) -> nn.Module:
    """The module that a sequential ``module`` runs first (``module`` itself otherwise)."""
    while _runs_children_in_order(module) and len(module) > 0:
        module = module[0]
    return module


def _foldable_conv(module: nn.Module) -> bool:
    return (
        isinstance(module, _ConvNd)
        and not module.transposed
        and module.padding_mode == "zeros"
        and module.weight.ndim - 2 in _CONVOLUTIONS
    )


def _foldable_norm(module: nn.Module) -> bool:
    return (
        isinstance(module, _BatchNorm)
        and not module.training
        and module.running_mean is not None
        and module.running_var is not None
    )


def foldable_pairs(model: nn.Module) -> list[tuple[_ConvNd, _BatchNorm]]:
    """The (convolution, eval-mode batch norm) pairs of ``model`` that fold."""
    pairs: list[tuple[_ConvNd, _BatchNorm]] = []
    for parent in model.modules():
        if not _runs_children_in_order(parent):
            continue
        children = list(parent.children())
        for conv, after in zip(children, children[1:], strict=False):
            norm = _first_leaf(after)
            if _foldable_conv(conv) and _foldable_norm(norm):
                assert isinstance(conv, _ConvNd) and isinstance(norm, _BatchNorm)
                if norm.num_features == conv.out_channels:
                    pairs.append((conv, norm))
    return pairs


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _folded_forward(conv: _ConvNd, norm: _BatchNorm) -> Callable[[torch.Tensor], torch.Tensor]:
    convolution = _CONVOLUTIONS[conv.weight.ndim - 2]

    def forward(x: torch.Tensor) -> torch.Tensor:
        assert norm.running_mean is not None and norm.running_var is not None
        scale = torch.rsqrt(norm.running_var + norm.eps)  # (C_out,)
        if norm.weight is not None:
            scale = norm.weight * scale
        shift = -norm.running_mean * scale
        if norm.bias is not None:
            shift = shift + norm.bias
        if conv.bias is not None:
            shift = shift + conv.bias * scale
        weight = conv.weight * scale.view(-1, *([1] * (conv.weight.ndim - 1)))
        return convolution(x, weight, shift, conv.stride, conv.padding, conv.dilation, conv.groups)

    return forward


@contextlib.contextmanager
def folded_batch_norm(model: nn.Module) -> Iterator[int]:
    """Within the block, each foldable pair computes as one convolution; yields their number.

    The model's parameters and buffers are untouched (the folded weights are computed at
    every call from the current ones); the original ``forward`` methods come back on exit.
    Enter it after putting the model in eval mode: batch norms in train mode do not fold.
    """
    pairs = foldable_pairs(model)
    for conv, norm in pairs:
        setattr(conv, "forward", _folded_forward(conv, norm))  # noqa: B010
        setattr(norm, "forward", _identity)  # noqa: B010
    try:
        yield len(pairs)
    finally:
        for conv, norm in pairs:
            delattr(conv, "forward")
            delattr(norm, "forward")
