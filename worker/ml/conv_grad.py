"""3D convolutions whose input gradient is computed as a forward convolution (CPU).

On a CPU, oneDNN's backward-data kernel of a 3D convolution with few channels is several
times slower than a forward convolution of the same size: on the 48x56x48 grid, the input
gradient of small_cnn's first layer (1 -> 4 channels, kernel 3) takes 93 ms against 8 ms for
its forward pass (docs/benchmarks.md, "training"). The training attribution needs exactly
that gradient, once per path point, and its double back-propagation needs the forward
convolution and the weight gradient, which are fast.

The input gradient of ``y = conv(x, w, stride s, padding p)`` is the transposed convolution
``gx[c, i] = sum_{o, j, k: s j + k - p = i} w[o, c, k] gy[o, j]``. Split each index
``i + p = s q + r`` by its residue ``r`` modulo the stride: with the kernel padded to a
multiple ``s T`` of the stride (zero taps), ``k = s t + r`` and
``gx[c, s q + r - p] = sum_o sum_t w[o, c, s t + r] gy[o, q - t]``: for each residue a
stride-1 convolution of ``gy`` with the flipped taps ``w[:, :, r::s]``. The residues become the
output channels of one convolution (``s^3 * C_in`` of them, kernel ``T^3``), which are then
interleaved back onto the input grid (a "sub-pixel" shuffle) and cropped. Its cost is that of
the forward convolution (kernel 3, stride 2: of a kernel padded to 4).

``conv3d`` is a drop-in for ``F.conv3d`` (groups 1, dilation 1, zero padding) with these
derivatives, all exact (float rounding aside):

- its backward gives ``gx`` (and, unless the graph of the backward is being built, the
  weight and bias gradients by PyTorch's own kernel);
- when the graph of the backward is built (``create_graph=True``: the first backward of a
  training attribution, which asks for the input gradient only), the weight gradient is not
  computed, and ``gx`` is itself a differentiable node of ``gy`` and ``w`` only, whose
  backward is a forward convolution (to ``gy``) and a weight gradient (to ``w``): what the
  double back-propagation of L_A needs. PyTorch's own node for this gradient also holds the
  convolution's input, and its double backward sends a zero gradient to it, which then
  runs back through the whole forward graph (a convolution backward per layer, on zeros);
  here the double backward stops at the weights.

Used by ``worker.ml.lean_graph.lean_graph`` on CPU tensors; elsewhere (cuDNN on a GPU)
``F.conv3d`` runs unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.nn.grad import conv3d_input

__all__ = ["ENABLED", "MAX_IN_CHANNELS", "conv3d", "input_gradient", "supported"]

Triple = tuple[int, int, int]


def _triple(value: Any) -> Triple:
    if isinstance(value, int):
        return (value, value, value)
    a, b, c = (int(v) for v in value)
    return (a, b, c)


# Input channels up to which the shuffle is faster than oneDNN's backward-data kernel. Measured
# on the 48x56x48 grid, batch 4, one thread (ms, native / shuffle): 1 -> 4 channels, kernel 3,
# stride 1: 123 / 25; 1 -> 32, kernel 4, stride 2: 45 / 11; 4 -> 16, kernel 3, stride 2: 15 /
# 15 once the shuffle's copy is counted; 16 -> 32: 4.4 / 8.8; 32 -> 64: 29 / 34. Wider layers
# keep PyTorch's kernel.
MAX_IN_CHANNELS = 2

# Off: ``conv3d`` is ``F.conv3d`` everywhere (``python -m bench --native-convolutions``).
ENABLED = True


def supported(
    x: torch.Tensor, weight: torch.Tensor, stride: Any, padding: Any, dilation: Any, groups: int
) -> bool:
    """Whether ``conv3d`` computes through this module: a 5-D CPU input, groups 1, dilation
    1, numeric non-negative padding and a floating dtype."""
    return (
        ENABLED
        and x.device.type == "cpu"
        and x.ndim == 5
        and weight.ndim == 5
        and groups == 1
        and not isinstance(padding, str)
        and _triple(dilation) == (1, 1, 1)
        and min(_triple(padding)) >= 0
        and x.dtype in (torch.float32, torch.float64)
    )


def input_gradient(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    stride: Triple,
    padding: Triple,
    input_size: Triple,
) -> torch.Tensor:
    """``conv_transpose3d(grad_output, weight, stride, padding)`` on a ``input_size`` grid,
    computed as one forward convolution and a shuffle (module docstring).

    Args:
        grad_output: ``(B, C_out, D', H', W')``.
        weight: ``(C_out, C_in, K1, K2, K3)``.
        stride: Stride of the forward convolution.
        padding: Padding of the forward convolution.
        input_size: ``(D, H, W)`` of the forward convolution's input.

    Returns:
        ``(B, C_in, D, H, W)``: the gradient of ``sum(grad_output * conv3d(x, weight))``
        with respect to ``x``; by the shuffle up to ``MAX_IN_CHANNELS`` input channels, by
        PyTorch's kernel above.
    """
    c_out, c_in = weight.shape[:2]
    if c_in > MAX_IN_CHANNELS:
        return conv3d_input(
            (grad_output.shape[0], c_in, *input_size), weight, grad_output, stride, padding
        )
    kernel = weight.shape[2:]
    if stride == (1, 1, 1) and all(k - 1 - p >= 0 for k, p in zip(kernel, padding, strict=True)):
        # One residue: a convolution with the flipped kernel and padding K - 1 - p lands on
        # the input grid exactly.
        flipped = weight.flip(2, 3, 4).transpose(0, 1)  # (C_in, C_out, K1, K2, K3)
        same = tuple(k - 1 - p for k, p in zip(kernel, padding, strict=True))
        out = F.conv3d(grad_output, flipped, padding=same)
        return _fit(out, input_size, (0, 0, 0))
    taps = [math.ceil(k / s) for k, s in zip(kernel, stride, strict=True)]  # T per axis
    s1, s2, s3 = stride
    t1, t2, t3 = taps
    pad = []
    for k, s, t in reversed(list(zip(kernel, stride, taps, strict=True))):
        pad += [0, s * t - k]
    padded = F.pad(weight, pad)  # (C_out, C_in, s1 T1, s2 T2, s3 T3), zero taps at the end
    split = padded.reshape(c_out, c_in, t1, s1, t2, s2, t3, s3)  # tap k = s t + r
    residues = split.permute(3, 5, 7, 1, 0, 2, 4, 6).flip(-3, -2, -1)  # (s1, s2, s3, C_in, ...)
    kernels = residues.reshape(s1 * s2 * s3 * c_in, c_out, t1, t2, t3)
    out = F.conv3d(grad_output, kernels, padding=(t1 - 1, t2 - 1, t3 - 1))  # (B, S C_in, Q...)
    batch = out.shape[0]
    q1, q2, q3 = out.shape[2:]
    shuffled = (
        out.reshape(batch, s1, s2, s3, c_in, q1, q2, q3)
        .permute(0, 4, 5, 1, 6, 2, 7, 3)
        .reshape(batch, c_in, q1 * s1, q2 * s2, q3 * s3)
    )  # index s q + r = i + p
    return _fit(shuffled, input_size, padding)


def _fit(full: torch.Tensor, size: Triple, start: Triple) -> torch.Tensor:
    """``full[..., start:start + size]`` per spatial axis, zero-padded where ``full`` ends
    before (positions no output reads get a zero gradient)."""
    pad: list[int] = []
    for n, a, have in reversed(list(zip(size, start, full.shape[2:], strict=True))):
        pad += [0, max(0, a + n - have)]
    if any(pad):
        full = F.pad(full, pad)
    d, h, w = size
    a1, a2, a3 = start
    return full[:, :, a1 : a1 + d, a2 : a2 + h, a3 : a3 + w].contiguous()


def _weight_gradient(
    grad_output: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: Triple,
    padding: Triple,
    bias: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
        grad_output,
        x,
        weight,
        [weight.shape[0]] if bias else None,
        list(stride),
        list(padding),
        [1, 1, 1],
        False,
        [0, 0, 0],
        1,
        [False, True, bias],
    )
    return grad_weight, grad_bias


class _InputGradient(torch.autograd.Function):
    """``gx = input_gradient(gy, w)`` as a node of a graph: its backward (to ``gy``, a forward
    convolution; to ``w``, a weight gradient) is what the double back-propagation needs."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        grad_output: torch.Tensor,
        weight: torch.Tensor,
        stride: Triple,
        padding: Triple,
        input_size: Triple,
    ) -> torch.Tensor:
        ctx.save_for_backward(grad_output, weight)
        ctx.stride, ctx.padding = stride, padding  # type: ignore[attr-defined]
        return input_gradient(grad_output, weight, stride, padding, input_size)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, v: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_output, weight = ctx.saved_tensors
        v = v.contiguous()
        to_output = to_weight = None
        if ctx.needs_input_grad[0]:
            to_output = F.conv3d(v, weight, None, ctx.stride, ctx.padding)
        if ctx.needs_input_grad[1]:
            # sum(v * gx) = sum over o, j of gy[o, j] * conv(v, w)[o, j]: a weight gradient
            # with v as the input and gy as the output gradient.
            to_weight, _ = _weight_gradient(
                grad_output, v, weight, ctx.stride, ctx.padding, bias=False
            )
        return to_output, to_weight, None, None, None


class _Convolution(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: Triple,
        padding: Triple,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding  # type: ignore[attr-defined]
        ctx.has_bias = bias is not None  # type: ignore[attr-defined]
        return F.conv3d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_output = grad_output.contiguous()
        size: Triple = _triple(x.shape[2:])
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():
            # create_graph=True: the first backward of a training attribution, which asks
            # for the input gradient only (the weights' gradients come from the double
            # backward, through _InputGradient).
            grad_x = (
                _InputGradient.apply(grad_output, weight, ctx.stride, ctx.padding, size)
                if need_x
                else None
            )
            return grad_x, None, None, None, None
        grad_x = (
            input_gradient(grad_output, weight, ctx.stride, ctx.padding, size) if need_x else None
        )
        grad_w = grad_b = None
        if need_w or need_b:
            grad_w, grad_b = _weight_gradient(
                grad_output, x, weight, ctx.stride, ctx.padding, bias=bool(ctx.has_bias)
            )
        return grad_x, grad_w if need_w else None, grad_b if need_b else None, None, None


def conv3d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> torch.Tensor:
    """``F.conv3d`` whose input gradient is a forward convolution where ``supported``
    (module docstring); ``F.conv3d`` itself otherwise."""
    if not supported(x, weight, stride, padding, dilation, groups):
        return F.conv3d(x, weight, bias, stride, padding, dilation, groups)
    return _Convolution.apply(x, weight, bias, _triple(stride), _triple(padding))
