"""``worker.ml.conv_grad``: a 3D convolution whose input gradient is a forward convolution and
a shuffle, with the values and the first and second derivatives of ``F.conv3d``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch.nn.grad import conv3d_input

from worker.ml import conv_grad
from worker.ml.attribution.differentiable import attribute
from worker.ml.lean_graph import lean_graph
from worker.ml.nets import build_network

# (C_in, C_out, kernel, stride, padding, grid): small_cnn's first layers, PatchGAN's (kernel 4,
# stride 2, padding 2), a stride that does not divide the kernel, a stride above the kernel
# size's half, a 1x1x1 kernel, and odd grids.
LAYERS = [
    (1, 4, 3, 1, 1, (12, 14, 10)),
    (4, 16, 3, 2, 1, (12, 14, 10)),
    (1, 32, 4, 2, 2, (12, 14, 11)),
    (3, 5, 4, 2, 2, (9, 8, 7)),
    (2, 3, 3, 3, 0, (10, 11, 12)),
    (2, 3, 1, 1, 0, (5, 6, 7)),
    (2, 3, 5, 2, 1, (9, 8, 7)),
]


@pytest.mark.parametrize(("c_in", "c_out", "kernel", "stride", "padding", "grid"), LAYERS)
def test_the_shuffle_is_the_transposed_convolution(
    c_in: int, c_out: int, kernel: int, stride: int, padding: int, grid: tuple[int, int, int]
) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, c_in, *grid, dtype=torch.float64)
    w = torch.randn(c_out, c_in, kernel, kernel, kernel, dtype=torch.float64)
    y = F.conv3d(x, w, None, stride, padding)
    gy = torch.randn_like(y)
    reference = conv3d_input(x.shape, w, gy, stride, padding)
    # The shuffle itself, whatever the channel count (input_gradient picks it up to
    # MAX_IN_CHANNELS input channels).
    limit = conv_grad.MAX_IN_CHANNELS
    try:
        conv_grad.MAX_IN_CHANNELS = 64
        mine = conv_grad.input_gradient(gy, w, (stride,) * 3, (padding,) * 3, grid)
    finally:
        conv_grad.MAX_IN_CHANNELS = limit
    assert mine.shape == reference.shape
    torch.testing.assert_close(
        mine, reference, rtol=1e-12, atol=1e-12 * float(reference.abs().max())
    )


@pytest.mark.parametrize(("c_in", "c_out", "kernel", "stride", "padding", "grid"), LAYERS)
def test_first_and_second_derivatives_equal_those_of_conv3d(
    c_in: int, c_out: int, kernel: int, stride: int, padding: int, grid: tuple[int, int, int]
) -> None:
    """A loss on the input gradient (built with create_graph, as the training attribution
    does) and on the output itself: every derivative to the input, weights and bias."""
    torch.manual_seed(1)
    x = torch.randn(2, c_in, *grid, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c_out, c_in, kernel, kernel, kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c_out, dtype=torch.float64, requires_grad=True)

    def derivatives(conv: Callable[..., torch.Tensor]) -> list[torch.Tensor]:
        y = conv(x, w, b, stride, padding)
        (gx,) = torch.autograd.grad((y**2).sum(), x, create_graph=True)
        ramp = torch.linspace(-1.0, 1.0, gx.numel(), dtype=gx.dtype).view_as(gx)
        loss = (gx * ramp).sum() + 0.3 * y.sum() + (y**3).mean()
        return [gx, *torch.autograd.grad(loss, [x, w, b])]

    for mine, theirs in zip(derivatives(conv_grad.conv3d), derivatives(F.conv3d), strict=True):
        scale = float(theirs.abs().max())
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12 * scale)


def test_the_double_backward_stops_at_the_weights() -> None:
    """In eval mode, with batch norm folded and the switches detached, the graph of a
    training attribution reaches no forward convolution: back-propagating L_A computes no
    convolution backward on the zero gradients PyTorch's own double backward sends there."""
    torch.manual_seed(0)
    model = build_network("small_cnn")
    model.eval()
    x = torch.randn(2, 1, 16, 18, 16)
    with lean_graph(model):
        out = attribute(model, x, ["integrated_gradients"], steps=2, create_graph=True)
    reached: set[str] = set()
    stack = [out.attributions.grad_fn]
    seen = set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        reached.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    assert "_InputGradientBackward" in reached
    assert not {name for name in reached if name.startswith(("_Convolution", "Convolution"))}


def test_other_devices_and_layouts_use_conv3d_itself() -> None:
    x = torch.randn(1, 2, 6, 6, 6)
    w = torch.randn(3, 2, 3, 3, 3)
    assert conv_grad.supported(x, w, 1, 1, 1, 1)
    assert not conv_grad.supported(x, w, 1, 1, 2, 1), "dilation"
    assert not conv_grad.supported(x, torch.randn(4, 1, 3, 3, 3), 1, 1, 1, 2), "groups"
    assert not conv_grad.supported(x, w, 1, "same", 1, 1), "string padding"
    assert not conv_grad.supported(x.half(), w.half(), 1, 1, 1, 1), "float16"
    y = conv_grad.conv3d(x.requires_grad_(True), w, None, 1, 1, 2)
    assert y.grad_fn is not None and "_Convolution" not in type(y.grad_fn).__name__
