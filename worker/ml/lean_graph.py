"""Graphs of the training attribution that cost less to back-propagate twice, with the same
values and derivatives (docs/method.md section 3).

Three rewrites, each active within a context manager, none touching parameters or buffers:

- ``switches_detached``: a LeakyReLU (ReLU) computes ``x * gate`` with the gate (1 or the
  slope) read from ``x.detach()``, and a global max pooling gathers ``x`` at the indices of the
  max of ``x.detach()``. Same output, same input gradient; but the input gradient's own graph
  (the first backward, ``create_graph=True``) no longer holds the activations, so
  back-propagating a loss on it (the double backward) stops at the weights instead of sending
  the zero tensors that PyTorch's second derivatives of these layers give for their input
  back through the whole forward graph (a convolution backward per layer, on zeros).
- ``folded_batch_norm``:

  in eval mode a batch norm is the affine map ``y = (x - mean) * s + beta`` with
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

- ``shuffled_input_gradients``: on a CPU, 3D convolutions with few input channels take
  their input gradient as a forward convolution and a shuffle (``worker.ml.conv_grad``),
  several times faster there than PyTorch's own backward for the first layers, which the
  training attribution differentiates once per path point. Same values and derivatives.

``lean_graph`` applies all three (the folded convolutions also go through ``conv_grad``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from worker.ml import conv_grad

__all__ = [
    "foldable_pairs",
    "folded_batch_norm",
    "lean_graph",
    "shuffled_input_gradients",
    "switches_detached",
]

# The 3D one takes its input gradient by conv_grad where that pays (CPU, few channels).
_CONVOLUTIONS: dict[int, Callable[..., torch.Tensor]] = {
    1: F.conv1d,
    2: F.conv2d,
    3: conv_grad.conv3d,
}


def _runs_children_in_order(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _first_leaf(module: nn.Module) -> nn.Module:
    """The module that a sequential ``module`` runs first (``module`` itself otherwise)."""
    while isinstance(module, nn.Sequential) and _runs_children_in_order(module) and len(module):
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


Forward = Callable[[torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def _forwards_replaced(replacements: list[tuple[nn.Module, Forward]]) -> Iterator[None]:
    """Each module computes with its replacement ``forward`` within the block (an instance
    attribute over the class's method), and with its own again on exit."""
    for module, forward in replacements:
        setattr(module, "forward", forward)  # noqa: B010
    try:
        yield
    finally:
        for module, _ in replacements:
            delattr(module, "forward")


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
    replacements: list[tuple[nn.Module, Forward]] = []
    for conv, norm in pairs:
        replacements += [(conv, _folded_forward(conv, norm)), (norm, _identity)]
    with _forwards_replaced(replacements):
        yield len(pairs)


def _gated_forward(slope: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        detached = x.detach()
        ones = torch.ones((), dtype=x.dtype, device=x.device).expand_as(detached)
        # 1 where x > 0, else the slope: LeakyReLU's own derivative kernel, one pass (where()
        # with scalar branches costs several on a CPU).
        gate = torch.ops.aten.leaky_relu_backward(ones, detached, slope, False)
        return x * gate

    return forward


# Adaptive max pooling of each kind, with its number of spatial dimensions.
_MAX_POOLS: dict[type[nn.Module], tuple[Callable[..., Any], int]] = {
    nn.AdaptiveMaxPool1d: (F.adaptive_max_pool1d, 1),
    nn.AdaptiveMaxPool2d: (F.adaptive_max_pool2d, 2),
    nn.AdaptiveMaxPool3d: (F.adaptive_max_pool3d, 3),
}


def _gathered_forward(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    pool, dims = _MAX_POOLS[type(module)]

    def forward(x: torch.Tensor) -> torch.Tensor:
        # The pooling's own indices (flat within each plane), so ties resolve as it does.
        _, indices = pool(x.detach(), module.output_size, return_indices=True)
        start = x.ndim - dims  # first spatial dimension
        values = x.flatten(start).gather(start, indices.flatten(start))
        return values.view_as(indices)

    return forward


@contextlib.contextmanager
def switches_detached(model: nn.Module) -> Iterator[int]:
    """Within the block, LeakyReLU, ReLU and adaptive max pooling read their switches (gate,
    argmax) from a detached input; yields the number of layers changed."""
    replacements: list[tuple[nn.Module, Forward]] = []
    for module in model.modules():
        if isinstance(module, nn.LeakyReLU):
            replacements.append((module, _gated_forward(float(module.negative_slope))))
        elif isinstance(module, nn.ReLU):
            replacements.append((module, _gated_forward(0.0)))
        elif type(module) in _MAX_POOLS and not getattr(module, "return_indices", False):
            replacements.append((module, _gathered_forward(module)))
    with _forwards_replaced(replacements):
        yield len(replacements)


def _shuffled_forward(conv: nn.Conv3d) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(x: torch.Tensor) -> torch.Tensor:
        return conv_grad.conv3d(
            x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups
        )

    return forward


@contextlib.contextmanager
def shuffled_input_gradients(model: nn.Module) -> Iterator[int]:
    """Within the block, the 3D convolutions (zero padding) that ``folded_batch_norm`` has not
    replaced compute through ``conv_grad.conv3d``; yields their number. Enter it inside
    ``folded_batch_norm``: a folded convolution keeps its folded ``forward``."""
    replacements: list[tuple[nn.Module, Forward]] = [
        (module, _shuffled_forward(module))
        for module in model.modules()
        if isinstance(module, nn.Conv3d)
        and module.padding_mode == "zeros"
        and "forward" not in vars(module)
    ]
    with _forwards_replaced(replacements):
        yield len(replacements)


@contextlib.contextmanager
def lean_graph(model: nn.Module) -> Iterator[None]:
    """``folded_batch_norm``, ``switches_detached`` and ``shuffled_input_gradients``."""
    with folded_batch_norm(model), switches_detached(model), shuffled_input_gradients(model):
        yield
