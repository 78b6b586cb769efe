"""Tests of the differentiable attributions used in training (G, G*x, IG, EG)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from captum.attr import IntegratedGradients
from torch import nn

from attrivue_core.configs import RunConfig
from worker.ml.attribution.differentiable import (
    ATTRIBUTION_METHODS,
    QuadratureMethod,
    attribute,
    expected_gradients,
    gradient,
    integrated_gradients,
    training_attribution_params,
)
from worker.ml.losses import attribution_loss
from worker.ml.nets import build_network

SHAPE = (2, 1, 8, 10, 8)


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    # Tiny volumes gain nothing from intra-op threads; on a shared 2-core machine spinning
    # OpenMP threads make the tests several times slower.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class SmoothNet(nn.Module):
    """A tiny 3D CNN with smooth activations, so gradients vary along the IG path."""

    def __init__(self, logit_map: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv3d(4, 4, 3, stride=2)
        self.head: nn.Module = nn.Conv3d(4, 1, 1) if logit_map else nn.Linear(4, 1)
        self.logit_map = logit_map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv2(nn.functional.softplus(self.conv1(x))))  # (B, 4, d, h, w)
        if self.logit_map:
            return self.head(h)  # (B, 1, d, h, w)
        return self.head(h.mean(dim=(2, 3, 4))).squeeze(1)  # (B,)


class LinearNet(nn.Module):
    """F(x) = sum(w * x) + b: every attribution method has a closed form."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, *shape[1:], dtype=torch.float64))
        self.bias = nn.Parameter(torch.tensor(0.3, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.weight * x).flatten(1).sum(1) + self.bias


def smooth_net(logit_map: bool = False) -> SmoothNet:
    torch.manual_seed(0)
    return SmoothNet(logit_map).double().eval()


def images(seed: int = 1, shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randn(shape, generator=generator, dtype=torch.float64)


def run(name: str, model: nn.Module, x: torch.Tensor, **params: Any):
    """Call a method by name, seeding EG so every call is reproducible."""
    if name == "expected_gradients" or params.get("method") == "riemann_stratified":
        params.setdefault("generator", torch.Generator().manual_seed(0))
    return ATTRIBUTION_METHODS[name](model, x, **params)


# One table of cases run through the shared checks.
CASES: list[tuple[str, dict[str, Any]]] = [
    ("gradient", {}),
    ("gradient_x_input", {}),
    ("integrated_gradients", {"steps": 4}),
    ("integrated_gradients", {"steps": 3, "method": "gausslegendre", "internal_batch_size": 4}),
    ("integrated_gradients", {"steps": 3, "method": "riemann_stratified"}),
    ("expected_gradients", {"k": 2}),
    ("expected_gradients", {"k": 3, "zero_reference_prob": 0.5, "internal_batch_size": 2}),
]
CASE_IDS = [f"{name}-{'-'.join(map(str, params.values())) or 'default'}" for name, params in CASES]


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("logit_map", [False, True], ids=["scalar", "logit_map"])
def test_shape_dtype_and_finite(name: str, params: dict, logit_map: bool) -> None:
    x = images()
    out = run(name, smooth_net(logit_map), x, create_graph=False, **params)
    assert out.attributions.shape == x.shape
    assert out.attributions.dtype == x.dtype
    assert torch.isfinite(out.attributions).all()
    assert out.attributions.abs().sum() > 0
    assert not out.attributions.requires_grad  # evaluation use keeps no graph
    if out.delta is not None:
        assert out.delta.shape == (x.shape[0],)
    if out.logits is not None:
        assert out.logits.shape == (x.shape[0],)
        assert not out.logits.requires_grad


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_create_graph_back_propagates_into_the_weights(name: str, params: dict) -> None:
    model = smooth_net()
    out = run(name, model, images(), create_graph=True, **params)
    targets = torch.zeros(SHAPE[0], 1, *SHAPE[2:])
    attribution_loss(out.attributions, targets, scale=10.0).backward()
    weights = [parameter for parameter in model.parameters() if parameter.ndim > 1]
    assert len(weights) == 3
    for parameter in weights:
        assert parameter.grad is not None
        assert parameter.grad.abs().sum() > 0


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_weight_gradient_matches_finite_differences(name: str, params: dict) -> None:
    model = smooth_net()
    x = images()
    targets = torch.zeros(SHAPE[0], 1, *SHAPE[2:])
    weight = model.conv1.weight

    def loss() -> torch.Tensor:
        out = run(name, model, x, create_graph=True, **params)
        return attribution_loss(out.attributions, targets, scale=10.0)

    (analytic,) = torch.autograd.grad(loss(), weight)
    eps = 1e-6
    for index in [(0, 0, 0, 0, 0), (2, 0, 1, 2, 1), (3, 0, 2, 1, 0)]:
        with torch.no_grad():
            weight[index] += eps
            up = loss().item()
            weight[index] -= 2 * eps
            down = loss().item()
            weight[index] += eps
        assert analytic[index].item() == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-9)


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_input_flags_values_and_model_mode_are_left_alone(
    name: str, params: dict, requires_grad: bool
) -> None:
    model = smooth_net().train()
    x = images().requires_grad_(requires_grad)
    before = x.detach().clone()
    run(name, model, x, **params)
    assert x.requires_grad is requires_grad
    assert x.grad is None
    assert torch.equal(x.detach(), before)
    assert model.training


@pytest.mark.parametrize(("name", "params"), CASES, ids=CASE_IDS)
def test_logits_when_given_are_a_plain_forward_with_graph(name: str, params: dict) -> None:
    model = smooth_net()
    x = images()
    out = run(name, model, x, create_graph=True, **params)
    if out.logits is None:
        assert name == "expected_gradients"
        return
    torch.testing.assert_close(out.logits, model(x), rtol=0, atol=0)
    out.logits.sum().backward()  # reusable for the classification loss
    assert model.head.weight.grad is not None


@pytest.mark.parametrize("method", ["riemann_middle", "gausslegendre"])
@pytest.mark.parametrize("baseline", ["zero", "random"])
def test_integrated_gradients_agrees_with_captum(method: QuadratureMethod, baseline: str) -> None:
    model = smooth_net()
    x = images()
    reference = torch.zeros_like(x) if baseline == "zero" else 0.5 * images(seed=7)
    expected, expected_delta = IntegratedGradients(model).attribute(
        x, baselines=reference, n_steps=8, method=method, return_convergence_delta=True
    )
    out = integrated_gradients(
        model, x, baseline=None if baseline == "zero" else reference, steps=8, method=method
    )
    # Captum casts its quadrature weights to float32, hence rtol 1e-5 rather than 1e-12.
    torch.testing.assert_close(out.attributions, expected, rtol=1e-5, atol=1e-9)
    assert out.delta is not None
    torch.testing.assert_close(out.delta, expected_delta, rtol=1e-3, atol=1e-8)


def test_completeness_delta_shrinks_with_steps() -> None:
    model = smooth_net()
    x = images()
    gaps = []
    for steps in (4, 16, 64):
        out = integrated_gradients(model, x, steps=steps, create_graph=False)
        assert out.delta is not None
        gaps.append(out.delta.abs().max().item())
    # Midpoint rule: error O(1/m^2), so each 4x refinement divides it by about 16.
    assert gaps[0] > 8 * gaps[1] > 64 * gaps[2]
    assert gaps[0] > 1e-6  # the path is curved enough for the check to mean something

    out = integrated_gradients(model, x, steps=16, method="gausslegendre", create_graph=False)
    assert out.delta is not None and out.logits is not None
    scale = (out.logits - model(torch.zeros_like(x))).abs().max().item()
    assert out.delta.abs().max().item() < 1e-10 * max(scale, 1.0)


def test_linear_model_closed_forms() -> None:
    torch.manual_seed(0)
    model = LinearNet(SHAPE)
    x = images()
    reference = images(seed=5)
    weight = model.weight.detach()

    out = gradient(model, x, times_input=True)
    torch.testing.assert_close(out.attributions, weight * x, rtol=0, atol=0)
    out = gradient(model, x)
    torch.testing.assert_close(out.attributions, weight.expand_as(x), rtol=0, atol=0)

    for method in ("riemann_middle", "gausslegendre"):
        out = integrated_gradients(model, x, baseline=reference, steps=5, method=method)
        torch.testing.assert_close(out.attributions, weight * (x - reference))
        assert out.delta is not None
        torch.testing.assert_close(out.delta, torch.zeros(SHAPE[0], dtype=torch.float64))


def test_expected_gradients_draws_another_subject_or_the_given_references() -> None:
    torch.manual_seed(0)
    model = LinearNet(SHAPE)
    weight = model.weight.detach()
    x = images()
    # With two images, the only other subject is the other image, whatever the draw.
    out = expected_gradients(model, x, k=3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.attributions, weight * (x - x.flip(0)))
    assert out.delta is None and out.logits is None

    bank = images(seed=9, shape=(1, *SHAPE[1:]))
    out = expected_gradients(model, x, references=bank, k=2)
    torch.testing.assert_close(out.attributions, weight * (x - bank))

    out = expected_gradients(model, x, references=bank, k=4, zero_reference_prob=1.0)
    torch.testing.assert_close(out.attributions, weight * x)

    single = expected_gradients(model, x[:1], k=2)  # no other subject: the zero image
    torch.testing.assert_close(single.attributions, weight * x[:1])

    with pytest.raises(ValueError, match="references must be"):
        expected_gradients(model, x, references=bank[:, :, :4])


def test_expected_gradients_is_reproducible_under_a_seed() -> None:
    model = smooth_net()
    x = images(shape=(4, *SHAPE[1:]))

    def draw(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return expected_gradients(model, x, k=2, generator=generator).attributions

    assert torch.equal(draw(3), draw(3))
    assert not torch.allclose(draw(3), draw(4))


def test_stratified_points_are_random_reproducible_and_unbiased() -> None:
    model = smooth_net()
    x = images()

    def draw(generator: torch.Generator) -> torch.Tensor:
        out = integrated_gradients(
            model, x, steps=4, method="riemann_stratified", generator=generator, create_graph=False
        )
        return out.attributions

    assert torch.equal(
        draw(torch.Generator().manual_seed(3)), draw(torch.Generator().manual_seed(3))
    )
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([draw(generator) for _ in range(300)])
    assert not torch.allclose(draws[0], draws[1])  # a new draw every call
    exact = integrated_gradients(
        model, x, steps=64, method="gausslegendre", create_graph=False
    ).attributions
    midpoint = integrated_gradients(model, x, steps=4, create_graph=False).attributions
    # The mean of the draws converges to the exact map; the fixed midpoints keep their bias.
    error_mean = ((draws.mean(0) - exact).norm() / exact.norm()).item()
    error_single = ((draws[0] - exact).norm() / exact.norm()).item()
    error_midpoint = ((midpoint - exact).norm() / exact.norm()).item()
    assert error_mean < error_single / 5
    assert error_mean < error_midpoint / 2, (error_mean, error_midpoint)


def test_training_params_give_the_stratified_points_the_run_generator() -> None:
    generator = torch.Generator().manual_seed(0)
    stratified = RunConfig.model_validate(
        {
            "loss_setting": "lc_la_supervised",
            "train_attribution": ["integrated_gradients"],
            "ig_method": "riemann_stratified",
        }
    )
    params = training_attribution_params(stratified, generator)
    assert params["method"] == "riemann_stratified" and params["generator"] is generator
    fixed = stratified.model_copy(update={"ig_method": "riemann_middle"})
    assert "generator" not in training_attribution_params(fixed, generator)


def test_expected_gradients_with_zero_references_approaches_integrated_gradients() -> None:
    model = smooth_net()
    x = images()
    generator = torch.Generator().manual_seed(0)
    eg = expected_gradients(
        model, x, k=400, zero_reference_prob=1.0, generator=generator, create_graph=False
    ).attributions
    ig = integrated_gradients(model, x, steps=32, create_graph=False).attributions
    # Monte Carlo over alpha: about 1% relative error here at k = 400.
    relative = (eg - ig).norm() / ig.norm()
    assert relative < 0.05


@pytest.mark.parametrize("name", ["integrated_gradients", "expected_gradients"])
def test_chunking_does_not_change_the_result(name: str) -> None:
    model = smooth_net()
    x = images()
    params: dict[str, Any] = {"steps": 5} if name == "integrated_gradients" else {"k": 3}
    whole = run(name, model, x, internal_batch_size=None, **params)
    chunked = run(name, model, x, internal_batch_size=1, **params)
    torch.testing.assert_close(chunked.attributions, whole.attributions, rtol=1e-10, atol=1e-12)


def test_only_the_forward_of_x_updates_batch_norm_statistics() -> None:
    torch.manual_seed(0)
    model = build_network("small_cnn", channels=(4, 8)).double().train()
    reference = build_network("small_cnn", channels=(4, 8)).double().train()
    reference.load_state_dict(model.state_dict())
    x = images()
    out = integrated_gradients(model, x, steps=4)
    reference(x)  # one plain forward of x
    assert out.logits is not None
    (out.attributions.sum() ** 2 + out.logits.sum()).backward()  # train-mode graph intact
    for (key, mine), (_, plain) in zip(
        model.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(mine, plain, rtol=0, atol=0, msg=key)

    before = {key: value.clone() for key, value in model.state_dict().items()}
    expected_gradients(model, x, k=2)
    momenta = [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    assert momenta and all(momentum == 0.1 for momentum in momenta)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)


def test_attribute_sums_methods_and_routes_parameters() -> None:
    model = smooth_net()
    x = images()
    one = attribute(model, x, "integrated_gradients", steps=4, create_graph=False)
    alone = integrated_gradients(model, x, steps=4, create_graph=False)
    torch.testing.assert_close(one.attributions, alone.attributions, rtol=0, atol=0)
    assert one.delta is not None

    both = attribute(model, x, ["gradient", "integrated_gradients"], steps=4)
    grads = gradient(model, x).attributions
    torch.testing.assert_close(both.attributions, grads + alone.attributions)
    assert both.delta is None  # completeness is not defined for a sum of methods
    assert both.logits is not None and both.attributions.requires_grad

    with pytest.raises(ValueError, match="unknown methods"):
        attribute(model, x, ["gradient", "occlusion"])
    with pytest.raises(ValueError, match="at least one"):
        attribute(model, x, [])
    with pytest.raises(TypeError, match="accepted by none"):
        attribute(model, x, "gradient", steps=4)


def test_invalid_arguments_are_refused() -> None:
    model = smooth_net()
    x = images()
    with pytest.raises(ValueError, match="unknown method"):
        integrated_gradients(model, x, method="riemann_trapezoid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        integrated_gradients(model, x, steps=0)
    with pytest.raises(ValueError, match="internal_batch_size"):
        integrated_gradients(model, x, internal_batch_size=0)
    with pytest.raises(ValueError, match="zero_reference_prob"):
        expected_gradients(model, x, zero_reference_prob=1.5)


def test_integrated_gradients_skips_the_endpoints_a_training_step_does_not_use() -> None:
    model = smooth_net()
    x = images()
    calls = {"n": 0}

    def count(*_: Any) -> None:
        calls["n"] += 1

    handle = model.register_forward_hook(count)
    try:
        full = integrated_gradients(model, x, steps=4)
        forwards_full, calls["n"] = calls["n"], 0
        given = integrated_gradients(model, x, steps=4, endpoints="input")
        forwards_input, calls["n"] = calls["n"], 0
        none = integrated_gradients(model, x, steps=4, endpoints="none")
        forwards_none = calls["n"]
    finally:
        handle.remove()
    # One forward per path point (all points in one pass), plus F(x) and F(x').
    assert (forwards_full, forwards_input, forwards_none) == (3, 2, 1)
    for out in (given, none):
        torch.testing.assert_close(out.attributions, full.attributions, rtol=0, atol=0)
        assert out.delta is None
    assert full.delta is not None and given.logits is not None and none.logits is None
    torch.testing.assert_close(given.logits, full.logits, rtol=0, atol=0)
    with pytest.raises(ValueError, match="endpoints must be"):
        integrated_gradients(model, x, steps=4, endpoints="some")  # type: ignore[arg-type]


@pytest.mark.parametrize("zero_reference_prob", [0.0, 0.5])
def test_expected_gradients_with_one_sample_takes_the_one_pass_shortcut_exactly(
    zero_reference_prob: float,
) -> None:
    # k = 1 in one pass skips the gathers, the scatter-add and the unit weights; chunks of
    # one image go through the general path. Both must give the same map and weight gradient.
    model = smooth_net()
    x = images()
    maps = []
    for chunk in (None, 1):
        model.zero_grad()
        out = run(
            "expected_gradients",
            model,
            x,
            k=1,
            zero_reference_prob=zero_reference_prob,
            internal_batch_size=chunk,
        )
        (out.attributions**2).sum().backward()
        maps.append((out.attributions.detach(), model.conv1.weight.grad.clone()))
    torch.testing.assert_close(maps[0][0], maps[1][0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(maps[0][1], maps[1][1], rtol=1e-10, atol=1e-12)
