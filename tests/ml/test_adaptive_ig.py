"""IG to a requested completeness delta (worker.ml.attribution.adaptive) and the quadrature
rules, pinned to Captum's where Captum has them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import nn

from worker.ml.attribution.adaptive import (
    adaptive_integrated_gradients,
    integrated_gradients_at,
)
from worker.ml.attribution.quadrature import gauss_legendre, riemann_middle, trapezoid


def _net(seed: int) -> nn.Module:
    """A small ReLU network: F is piecewise linear along the path, its slope jumps."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv3d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv3d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6**3, 1),
        nn.Flatten(0),
    ).eval()


def _images(seed: int) -> torch.Tensor:
    torch.manual_seed(100 + seed)
    return 3.0 * torch.randn(2, 1, 6, 6, 6)


@pytest.mark.parametrize("steps", [1, 2, 7, 8, 32, 50, 129])
def test_gauss_legendre_matches_captum(steps: int) -> None:
    captum_sizes, captum_alphas = approximation_parameters("gausslegendre")
    alphas, weights = gauss_legendre(steps)
    assert alphas.dtype == np.float64 and weights.dtype == np.float64
    np.testing.assert_allclose(alphas, captum_alphas(steps), rtol=0, atol=1e-7)
    np.testing.assert_allclose(weights, captum_sizes(steps), rtol=0, atol=1e-7)
    assert abs(weights.sum() - 1.0) < 1e-12


@pytest.mark.parametrize("steps", [2, 8, 50])
def test_riemann_middle_matches_captum(steps: int) -> None:
    captum_sizes, captum_alphas = approximation_parameters("riemann_middle")
    alphas, weights = riemann_middle(steps)
    # Captum builds its midpoints with a float32 linspace: equal to float32 rounding.
    np.testing.assert_allclose(alphas, captum_alphas(steps), rtol=0, atol=1e-7)
    np.testing.assert_allclose(weights, captum_sizes(steps), rtol=0, atol=1e-7)


def test_trapezoid_weights() -> None:
    alphas = np.array([0.0, 0.25, 0.375, 0.5, 1.0])
    weights = trapezoid(alphas)
    np.testing.assert_allclose(weights, [0.125, 0.1875, 0.125, 0.3125, 0.25])
    assert (weights * alphas).sum() == pytest.approx(0.5)  # exact for linear integrands
    with pytest.raises(ValueError, match="increase from 0 to 1"):
        trapezoid(np.array([0.0, 0.6, 0.5, 1.0]))


def test_adaptive_reaches_target_where_few_fixed_steps_do_not() -> None:
    model, x = _net(0), _images(0)
    baseline = torch.zeros_like(x)
    seen: list[tuple[int, float]] = []
    result = adaptive_integrated_gradients(
        model, x, baseline, 0.01, 129, internal_batch_size=16, progress=lambda *r: seen.append(r)
    )
    assert result.reached
    assert (result.relative_delta <= 0.01).all()
    assert seen == result.rounds and len(seen) > 1
    # The recorded delta is the completeness gap of the returned map.
    with torch.no_grad():
        gap = (model(x) - model(baseline)).double()
    sums = result.attributions.double().flatten(1).sum(1)
    np.testing.assert_allclose(result.delta.numpy(), (sums - gap).abs().numpy(), atol=1e-5)
    np.testing.assert_allclose(result.logits.numpy(), model(x).detach().double().numpy(), atol=1e-5)
    # Captum with as many Gauss-Legendre or midpoint points as the first rule misses 1 %.
    ig = IntegratedGradients(model)
    for method in ("gausslegendre", "riemann_middle"):
        _, delta = ig.attribute(
            x, baselines=baseline, n_steps=4, method=method, return_convergence_delta=True
        )
        assert float((delta.abs().double() / gap.abs()).max()) > 0.03


def test_reused_points_give_the_fresh_map() -> None:
    model, x = _net(0), _images(0)
    baseline = torch.zeros_like(x)
    adaptive = adaptive_integrated_gradients(model, x, baseline, 0.01, 129, internal_batch_size=3)
    assert adaptive.points > 3  # it refined, so it reused earlier points
    fresh = integrated_gradients_at(model, x, baseline, adaptive.alphas, internal_batch_size=64)
    scale = float(fresh.attributions.abs().max())
    assert float((adaptive.attributions - fresh.attributions).abs().max()) <= 1e-6 * scale
    np.testing.assert_allclose(adaptive.delta.numpy(), fresh.delta.numpy(), rtol=1e-4, atol=1e-7)
    for points in adaptive.alphas:
        assert points[0] == 0.0 and points[-1] == 1.0 and np.all(np.diff(points) > 0)


def test_cap_stops_refinement() -> None:
    model, x = _net(0), _images(0)
    result = adaptive_integrated_gradients(model, x, torch.zeros_like(x), 1e-9, 9)
    assert not result.reached
    assert result.points == 9
    assert all(len(points) <= 9 for points in result.alphas)


@pytest.mark.parametrize(
    ("target", "cap", "message"), [(0.0, 9, "target_delta"), (0.01, 2, "max_points")]
)
def test_adaptive_refuses_bad_settings(target: float, cap: int, message: str) -> None:
    x = _images(0)
    with pytest.raises(ValueError, match=message):
        adaptive_integrated_gradients(_net(0), x, torch.zeros_like(x), target, cap)
