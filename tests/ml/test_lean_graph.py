"""``worker.ml.lean_graph``: the rewritten attribution graph has the same values, input
gradient and second-order weight gradient as the network itself."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from worker.ml.lean_graph import folded_batch_norm, lean_graph, switches_detached
from worker.ml.nets import build_network


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _double_backward(
    model: nn.Module, x: torch.Tensor, context: contextlib.AbstractContextManager
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None]]:
    """Logits, their input gradient, and the weight gradient of a loss on both."""
    inputs = x.clone().requires_grad_(True)
    with context:
        logits = model(inputs)
        (grads,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    loss = (grads**2).sum() * 1e3 + logits.sum()
    weights = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    return logits.detach(), grads.detach(), list(weights)


@pytest.mark.parametrize(
    ("network", "options"),
    [
        ("small_cnn", {"channels": (3, 4)}),
        ("small_cnn", {"channels": (3, 4), "pooling": "avgmax"}),
        ("small_cnn", {"channels": (3, 4), "activation": "relu"}),
        ("small_cnn", {"channels": (3, 4), "evidence_floor": True}),
        ("patchgan", {"base_width": 4}),
    ],
)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_lean_graph_changes_no_value_or_derivative(network: str, options: dict, mode: str) -> None:
    torch.manual_seed(0)
    model = build_network(network, **options)
    x = torch.randn(2, 1, 12, 14, 12)
    x[..., :3, :, :] = 0.0  # ties in the background, as with brain images
    model(x)  # running statistics away from their initial values
    model.train(mode == "train")
    reference = _double_backward(model, x, contextlib.nullcontext())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    lean = _double_backward(model, x, lean_graph(model))
    torch.testing.assert_close(lean[0], reference[0], rtol=1e-5, atol=1e-6)
    # float32 rounding: the first layer's input gradient is summed in another order
    # (worker.ml.conv_grad), so the tolerance is relative to the largest gradient.
    scale = float(reference[1].abs().max())
    torch.testing.assert_close(lean[1], reference[1], rtol=1e-5, atol=1e-6 * scale)
    # float32 rounding of gradients that are 0 in exact arithmetic (a convolution's bias
    # before a train-mode batch norm: 3e-4 against 338 for its weights) is bounded by the
    # largest gradient of the model, not by their own.
    largest = max(float(g.abs().max()) for g in reference[2] if g is not None)
    for mine, theirs in zip(lean[2], reference[2], strict=True):
        assert (mine is None) == (theirs is None) or (theirs is not None and not theirs.any())
        if mine is not None and theirs is not None:
            atol = max(1e-6 * float(theirs.abs().max()), 1e-7 * largest)
            torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=atol)
    if mode == "train":  # the train-mode forward moved the statistics alike in both
        return
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_what_is_rewritten_and_restored() -> None:
    model = build_network("small_cnn", channels=(3, 4, 5))
    model.eval()
    with folded_batch_norm(model) as folded:
        assert folded == 3
        assert all("forward" in vars(m) for m in model.modules() if isinstance(m, nn.BatchNorm3d))
    assert not any("forward" in vars(m) for m in model.modules())
    with switches_detached(model) as switched:
        assert switched == 4  # three LeakyReLU and the max pooling
    model.train()
    with folded_batch_norm(model) as folded:
        assert folded == 0  # batch statistics do not fold
    patchgan = build_network("patchgan", base_width=4)
    patchgan.eval()
    with folded_batch_norm(patchgan) as folded:
        assert folded == 0  # instance norm
